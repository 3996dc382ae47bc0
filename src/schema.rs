//! Table schemas as captured from the source at the snapshot point: columns with their MySQL
//! types and the value kind every encoder maps from, indexes, and the chunk key.
//!
//! This is what `schema.json` holds and what the state table keeps so a resumed backup can check
//! that the table it continues is still the table it started.

use serde::{Deserialize, Serialize};

/// How a column's values are represented; derived from the MySQL type once, used per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// TINYINT … BIGINT, signed.
    Int,
    /// TINYINT … BIGINT UNSIGNED.
    UInt,
    /// DECIMAL(p,s): exact text.
    Decimal,
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DATE.
    Date,
    /// DATETIME(n).
    DateTime,
    /// TIMESTAMP(n), read in UTC.
    Timestamp,
    /// TIME(n), a signed duration.
    Time,
    /// YEAR.
    Year,
    /// CHAR, VARCHAR, TEXT in any character set (read as utf8mb4).
    Text,
    /// ENUM.
    Enum,
    /// SET.
    Set,
    /// BINARY, VARBINARY, BLOB.
    Binary,
    /// BIT(n).
    Bit,
    /// JSON (MySQL type, or MariaDB LONGTEXT with `json_valid` check).
    Json,
    /// Spatial types: MariaDB's internal form (SRID + WKB).
    Geometry,
}

impl Kind {
    /// Kind of a column from `information_schema.COLUMNS`.
    pub fn from_info(data_type: &str, column_type: &str, is_json: bool) -> Kind {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                if unsigned {
                    Kind::UInt
                } else {
                    Kind::Int
                }
            }
            "decimal" | "numeric" => Kind::Decimal,
            "float" => Kind::Float,
            "double" | "real" | "double precision" => Kind::Double,
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "year" => Kind::Year,
            "enum" => Kind::Enum,
            "set" => Kind::Set,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Kind::Binary
            }
            "bit" => Kind::Bit,
            "json" => Kind::Json,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => Kind::Geometry,
            _ if is_json => Kind::Json,
            // char, varchar, *text, and MariaDB's inet4/inet6/uuid, which read as text.
            _ => Kind::Text,
        }
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// `DATA_TYPE`, e.g. `varchar`.
    pub data_type: String,
    /// `COLUMN_TYPE`, e.g. `varchar(20)` or `int(10) unsigned`.
    pub column_type: String,
    /// Value kind used by encoders.
    pub kind: Kind,
    /// NULL allowed.
    pub nullable: bool,
    /// `PRI`, `UNI`, `MUL` or empty.
    pub key: String,
    /// Character set of text columns.
    pub charset: Option<String>,
    /// Fractional-second digits of temporal columns.
    pub fsp: u32,
    /// Generated (virtual or stored) column: read, but not written back on restore.
    pub generated: bool,
}

/// One index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Name (`PRIMARY` for the primary key).
    pub name: String,
    /// Unique (primary included).
    pub unique: bool,
    /// Columns in index order.
    pub columns: Vec<String>,
    /// Some column allows NULL.
    pub nullable: bool,
}

/// How a table is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey {
    /// Index used for FORCE INDEX and boundaries.
    pub index: String,
    /// Its columns.
    pub columns: Vec<String>,
    /// Unique: rows are ordered and each key is one row.
    pub unique: bool,
}

/// A table as captured at the snapshot point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Schema (database).
    pub schema: String,
    /// Table.
    pub table: String,
    /// All columns of the table in ordinal order.
    pub columns: Vec<Column>,
    /// Indexes.
    pub indexes: Vec<Index>,
    /// Primary key columns (empty when none).
    pub primary_key: Vec<String>,
    /// `SHOW CREATE TABLE`.
    pub create_sql: String,
}

impl TableSchema {
    /// `schema.table`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Column by name (case-insensitive, as MySQL).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Index by name (case-insensitive).
    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indexes
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(name))
    }
}

/// Quotes an identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `schema`.`table` ``.
pub fn quote_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            Kind::from_info("bigint", "bigint(20) unsigned", false),
            Kind::UInt
        );
        assert_eq!(Kind::from_info("int", "int(11)", false), Kind::Int);
        assert_eq!(Kind::from_info("longtext", "longtext", true), Kind::Json);
        assert_eq!(Kind::from_info("longtext", "longtext", false), Kind::Text);
        assert_eq!(
            Kind::from_info("varbinary", "varbinary(3)", false),
            Kind::Binary
        );
        assert_eq!(Kind::from_info("point", "point", false), Kind::Geometry);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_table("a`b", "c"), "`a``b`.`c`");
    }
}
