#compdef storagetapper

autoload -U is-at-least

_storagetapper() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_storagetapper_commands" \
"*::: :->storagetapper" \
&& ret=0
    case $state in
    (storagetapper)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:storagetapper-command-$line[1]:"
        case $line[1] in
            (backup)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML)]:FILE:_files' \
'--manifest=[The manifest (TOML)]:FILE:_files' \
'-t+[Worker connections (default\: \[snapshot\] threads)]:N:_default' \
'--threads=[Worker connections (default\: \[snapshot\] threads)]:N:_default' \
'--until=[With --follow\: stop at the first transaction boundary at or after this position]:POS:_default' \
'--max-events=[With --follow\: stop after this many change events]:N:_default' \
'--duration=[With --follow\: stop after this long (\`30s\`, \`5m\`, \`1h\`)]:DURATION:_default' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'--fresh[Abandon an unfinished backup of this manifest and start a new one]' \
'--follow[After the snapshot, stream changes from the snapshot'\''s position into the backup'\''s \`changelog/\` (like \`tail\`), so snapshot + changelog give the source at any later position]' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(tail)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML)]:FILE:_files' \
'--manifest=[The manifest (TOML)]:FILE:_files' \
'--from=[Where to start\: \`saved\` (the position saved by the last run, else \`now\`), \`now\`, a MariaDB GTID state (\`0-1-977\`) or \`<file>\:<pos>\`]:POS:_default' \
'--until=[Stop at the first transaction boundary at or after this position (GTID state, \`<file>\:<pos>\` or \`now\` = the server'\''s position at start)]:POS:_default' \
'--max-events=[Stop at the first transaction boundary after this many change events]:N:_default' \
'--duration=[Stop at the first transaction boundary after this long (\`30s\`, \`5m\`, \`1h\`)]:DURATION:_default' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(restore)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML) whose destination holds the backup]:FILE:_files' \
'--manifest=[The manifest (TOML) whose destination holds the backup]:FILE:_files' \
'-b+[Backup id, or \`latest\`]:ID:_default' \
'--backup=[Backup id, or \`latest\`]:ID:_default' \
'--target=[\`mysql\://user@host\:port\[/database\]\`\: a database in the path receives every table, otherwise each table goes back to its original schema]:URL:_default' \
'--table=[Only tables whose \`schema.table\` matches this glob]:PATTERN:_default' \
'-t+[Parallel connections (default\: \[snapshot\] threads)]:N:_default' \
'--threads=[Parallel connections (default\: \[snapshot\] threads)]:N:_default' \
'*-i+[age identity file for an encrypted backup (repeatable; default\: the files in STORAGETAPPER_IDENTITY, \`\:\`-separated)]:FILE:_files' \
'*--identity=[age identity file for an encrypted backup (repeatable; default\: the files in STORAGETAPPER_IDENTITY, \`\:\`-separated)]:FILE:_files' \
'--until=[After loading the snapshot, apply the backup'\''s changelog (from \`backup --follow\`) up to this position\: a MariaDB GTID state or \`<file>\:<pos>\` (point-in-time restore)]:POS:_default' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'--replace[Drop and recreate target tables that are not empty]' \
'--no-binlog[Keep the load out of the target'\''s binlog (SET sql_log_bin = 0)]' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML) whose destination holds the backup]:FILE:_files' \
'--manifest=[The manifest (TOML) whose destination holds the backup]:FILE:_files' \
'-b+[Backup id, or \`latest\`]:ID:_default' \
'--backup=[Backup id, or \`latest\`]:ID:_default' \
'*-i+[age identity file for an encrypted backup (repeatable; default\: the files in STORAGETAPPER_IDENTITY, \`\:\`-separated)]:FILE:_files' \
'*--identity=[age identity file for an encrypted backup (repeatable; default\: the files in STORAGETAPPER_IDENTITY, \`\:\`-separated)]:FILE:_files' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'--against-source[Also compare each chunk'\''s rows with the live source (a fingerprint of the same key range now vs at the snapshot). On a live source, changed chunks are expected (rows written since), not corruption\: they are reported, not counted as bad]' \
'--json[Machine-readable report]' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(keygen)
_arguments "${_arguments_options[@]}" : \
'-o+[Write the key file here (refuses to overwrite); default\: print it to stdout]:FILE:_files' \
'--output=[Write the key file here (refuses to overwrite); default\: print it to stdout]:FILE:_files' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(plan)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML)]:FILE:_files' \
'--manifest=[The manifest (TOML)]:FILE:_files' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML)]:FILE:_files' \
'--manifest=[The manifest (TOML)]:FILE:_files' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'--json[Machine-readable output]' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(list)
_arguments "${_arguments_options[@]}" : \
'-m+[The manifest (TOML)]:FILE:_files' \
'--manifest=[The manifest (TOML)]:FILE:_files' \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'--json[Machine-readable output]' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':shell -- The shell:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
'--log-format=[Log format on stderr]:LOG_FORMAT:((text\:"Human-readable lines"
json\:"One JSON object per line"))' \
'*-v[More log output (-v debug, -vv trace)]' \
'*--verbose[More log output (-v debug, -vv trace)]' \
'*-q[Less log output (-q warnings only, -qq errors only)]' \
'*--quiet[Less log output (-q warnings only, -qq errors only)]' \
'--no-progress[No progress bars or progress log lines]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_storagetapper__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:storagetapper-help-command-$line[1]:"
        case $line[1] in
            (backup)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(tail)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(restore)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(keygen)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(plan)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(list)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_storagetapper_commands] )) ||
_storagetapper_commands() {
    local commands; commands=(
'backup:Take a consistent, parallel, chunked snapshot of the manifest'\''s tables (resumes an unfinished backup of the same manifest). With a \`kafka\://\` destination\: every row as an \`op\: "r"\` event on its table'\''s topic, read in key order, exactly once across kills' \
'tail:Stream the manifest'\''s tables'\'' row changes from the binlog into changelog files, or into Kafka topics with a \`kafka\://\` destination (realtime only, no snapshot). Resumes from the saved position; SIGTERM/Ctrl-C stops at the next transaction boundary, saves and exits 0' \
'restore:Load a backup into a MySQL/MariaDB server (resumes an unfinished restore of the same backup into the same target). The target'\''s password comes from STORAGETAPPER_TARGET_PASSWORD' \
'verify:Check that a backup is whole\: every file exists, matches its sha256, decrypts, decompresses and decodes with the right row count. Exit 1 names each bad file' \
'keygen:Make a new age X25519 identity (key file, mode 0600) and print its recipient' \
'plan:Dry run\: resolved tables, columns, chunk keys, estimated rows and bytes, the exact SELECTs and source checks; writes nothing' \
'status:What the state table holds\: backups, chunk progress and change-stream positions' \
'list:Complete backups present at the destination' \
'completions:Print a shell completion script' \
'man:Print the man page (roff)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'storagetapper commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__backup_commands] )) ||
_storagetapper__subcmd__backup_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper backup commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__completions_commands] )) ||
_storagetapper__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper completions commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help_commands] )) ||
_storagetapper__subcmd__help_commands() {
    local commands; commands=(
'backup:Take a consistent, parallel, chunked snapshot of the manifest'\''s tables (resumes an unfinished backup of the same manifest). With a \`kafka\://\` destination\: every row as an \`op\: "r"\` event on its table'\''s topic, read in key order, exactly once across kills' \
'tail:Stream the manifest'\''s tables'\'' row changes from the binlog into changelog files, or into Kafka topics with a \`kafka\://\` destination (realtime only, no snapshot). Resumes from the saved position; SIGTERM/Ctrl-C stops at the next transaction boundary, saves and exits 0' \
'restore:Load a backup into a MySQL/MariaDB server (resumes an unfinished restore of the same backup into the same target). The target'\''s password comes from STORAGETAPPER_TARGET_PASSWORD' \
'verify:Check that a backup is whole\: every file exists, matches its sha256, decrypts, decompresses and decodes with the right row count. Exit 1 names each bad file' \
'keygen:Make a new age X25519 identity (key file, mode 0600) and print its recipient' \
'plan:Dry run\: resolved tables, columns, chunk keys, estimated rows and bytes, the exact SELECTs and source checks; writes nothing' \
'status:What the state table holds\: backups, chunk progress and change-stream positions' \
'list:Complete backups present at the destination' \
'completions:Print a shell completion script' \
'man:Print the man page (roff)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'storagetapper help commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__backup_commands] )) ||
_storagetapper__subcmd__help__subcmd__backup_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help backup commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__completions_commands] )) ||
_storagetapper__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help completions commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__help_commands] )) ||
_storagetapper__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help help commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__keygen_commands] )) ||
_storagetapper__subcmd__help__subcmd__keygen_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help keygen commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__list_commands] )) ||
_storagetapper__subcmd__help__subcmd__list_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help list commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__man_commands] )) ||
_storagetapper__subcmd__help__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help man commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__plan_commands] )) ||
_storagetapper__subcmd__help__subcmd__plan_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help plan commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__restore_commands] )) ||
_storagetapper__subcmd__help__subcmd__restore_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help restore commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__status_commands] )) ||
_storagetapper__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help status commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__tail_commands] )) ||
_storagetapper__subcmd__help__subcmd__tail_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help tail commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__help__subcmd__verify_commands] )) ||
_storagetapper__subcmd__help__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper help verify commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__keygen_commands] )) ||
_storagetapper__subcmd__keygen_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper keygen commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__list_commands] )) ||
_storagetapper__subcmd__list_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper list commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__man_commands] )) ||
_storagetapper__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper man commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__plan_commands] )) ||
_storagetapper__subcmd__plan_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper plan commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__restore_commands] )) ||
_storagetapper__subcmd__restore_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper restore commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__status_commands] )) ||
_storagetapper__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper status commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__tail_commands] )) ||
_storagetapper__subcmd__tail_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper tail commands' commands "$@"
}
(( $+functions[_storagetapper__subcmd__verify_commands] )) ||
_storagetapper__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'storagetapper verify commands' commands "$@"
}

if [ "$funcstack[1]" = "_storagetapper" ]; then
    _storagetapper "$@"
else
    compdef _storagetapper storagetapper
fi
