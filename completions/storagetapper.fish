# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_storagetapper_global_optspecs
    string join \n log-format= v/verbose q/quiet no-progress h/help V/version
end

function __fish_storagetapper_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_storagetapper_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_storagetapper_using_subcommand
    set -l cmd (__fish_storagetapper_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c storagetapper -n "__fish_storagetapper_needs_command" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_needs_command" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "backup" -d 'Take a consistent, parallel, chunked snapshot of the manifest\'s tables (resumes an unfinished backup of the same manifest). With a `kafka://` destination: every row as an `op: "r"` event on its table\'s topic, read in key order, exactly once across kills'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "tail" -d 'Stream the manifest\'s tables\' row changes from the binlog into changelog files, or into Kafka topics with a `kafka://` destination (realtime only, no snapshot). Resumes from the saved position; SIGTERM/Ctrl-C stops at the next transaction boundary, saves and exits 0'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "restore" -d 'Load a backup into a MySQL/MariaDB server (resumes an unfinished restore of the same backup into the same target). The target\'s password comes from STORAGETAPPER_TARGET_PASSWORD'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "verify" -d 'Check that a backup is whole: every file exists, matches its sha256, decrypts, decompresses and decodes with the right row count. Exit 1 names each bad file'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "keygen" -d 'Make a new age X25519 identity (key file, mode 0600) and print its recipient'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "plan" -d 'Dry run: resolved tables, columns, chunk keys, estimated rows and bytes, the exact SELECTs and source checks; writes nothing'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "status" -d 'What the state table holds: backups, chunk progress and change-stream positions'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "list" -d 'Complete backups present at the destination'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c storagetapper -n "__fish_storagetapper_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s m -l manifest -d 'The manifest (TOML)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s t -l threads -d 'Worker connections (default: [snapshot] threads)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l until -d 'With --follow: stop at the first transaction boundary at or after this position' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l max-events -d 'With --follow: stop after this many change events' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l duration -d 'With --follow: stop after this long (`30s`, `5m`, `1h`)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l fresh -d 'Abandon an unfinished backup of this manifest and start a new one'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l follow -d 'After the snapshot, stream changes from the snapshot\'s position into the backup\'s `changelog/` (like `tail`), so snapshot + changelog give the source at any later position'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand backup" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -s m -l manifest -d 'The manifest (TOML)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l from -d 'Where to start: `saved` (the position saved by the last run, else `now`), `now`, a MariaDB GTID state (`0-1-977`) or `<file>:<pos>`' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l until -d 'Stop at the first transaction boundary at or after this position (GTID state, `<file>:<pos>` or `now` = the server\'s position at start)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l max-events -d 'Stop at the first transaction boundary after this many change events' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l duration -d 'Stop at the first transaction boundary after this long (`30s`, `5m`, `1h`)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand tail" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s m -l manifest -d 'The manifest (TOML) whose destination holds the backup' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s b -l backup -d 'Backup id, or `latest`' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l target -d '`mysql://user@host:port[/database]`: a database in the path receives every table, otherwise each table goes back to its original schema' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l table -d 'Only tables whose `schema.table` matches this glob' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s t -l threads -d 'Parallel connections (default: [snapshot] threads)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s i -l identity -d 'age identity file for an encrypted backup (repeatable; default: the files in STORAGETAPPER_IDENTITY, `:`-separated)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l until -d 'After loading the snapshot, apply the backup\'s changelog (from `backup --follow`) up to this position: a MariaDB GTID state or `<file>:<pos>` (point-in-time restore)' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l replace -d 'Drop and recreate target tables that are not empty'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l no-binlog -d 'Keep the load out of the target\'s binlog (SET sql_log_bin = 0)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand restore" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s m -l manifest -d 'The manifest (TOML) whose destination holds the backup' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s b -l backup -d 'Backup id, or `latest`' -r
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s i -l identity -d 'age identity file for an encrypted backup (repeatable; default: the files in STORAGETAPPER_IDENTITY, `:`-separated)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -l against-source -d 'Also compare each chunk\'s rows with the live source (a fingerprint of the same key range now vs at the snapshot). On a live source, changed chunks are expected (rows written since), not corruption: they are reported, not counted as bad'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -l json -d 'Machine-readable report'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand verify" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -s o -l output -d 'Write the key file here (refuses to overwrite); default: print it to stdout' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand keygen" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -s m -l manifest -d 'The manifest (TOML)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand plan" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -s m -l manifest -d 'The manifest (TOML)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -l json -d 'Machine-readable output'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand status" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -s m -l manifest -d 'The manifest (TOML)' -r -F
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -l json -d 'Machine-readable output'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand list" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand completions" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -l log-format -d 'Log format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -s v -l verbose -d 'More log output (-v debug, -vv trace)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -l no-progress -d 'No progress bars or progress log lines'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand man" -s V -l version -d 'Print version'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "backup" -d 'Take a consistent, parallel, chunked snapshot of the manifest\'s tables (resumes an unfinished backup of the same manifest). With a `kafka://` destination: every row as an `op: "r"` event on its table\'s topic, read in key order, exactly once across kills'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "tail" -d 'Stream the manifest\'s tables\' row changes from the binlog into changelog files, or into Kafka topics with a `kafka://` destination (realtime only, no snapshot). Resumes from the saved position; SIGTERM/Ctrl-C stops at the next transaction boundary, saves and exits 0'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "restore" -d 'Load a backup into a MySQL/MariaDB server (resumes an unfinished restore of the same backup into the same target). The target\'s password comes from STORAGETAPPER_TARGET_PASSWORD'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "verify" -d 'Check that a backup is whole: every file exists, matches its sha256, decrypts, decompresses and decodes with the right row count. Exit 1 names each bad file'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "keygen" -d 'Make a new age X25519 identity (key file, mode 0600) and print its recipient'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "plan" -d 'Dry run: resolved tables, columns, chunk keys, estimated rows and bytes, the exact SELECTs and source checks; writes nothing'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "status" -d 'What the state table holds: backups, chunk progress and change-stream positions'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "list" -d 'Complete backups present at the destination'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "man" -d 'Print the man page (roff)'
complete -c storagetapper -n "__fish_storagetapper_using_subcommand help; and not __fish_seen_subcommand_from backup tail restore verify keygen plan status list completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
