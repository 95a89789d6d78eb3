//! Parsing the doctor import file (`idp doctors import FILE.csv`).
//!
//! The file is UTF-8 CSV (RFC 4180 quoting; a UTF-8 byte order mark at the start is
//! accepted, as spreadsheet programs write one). The first line is the header. Its columns
//! may come in any order, but each must be one of [`COLUMNS`], at most once; the
//! [`REQUIRED_COLUMNS`] must be present. A missing optional column means "empty" on every
//! row.
//!
//! Values are trimmed of ASCII whitespace (a full-width space inside a name is kept); an
//! empty value is "absent". Per column:
//! - `hpki_holder_id`, `family_name`, `given_name`: required, non-empty;
//! - `gender`: `male`, `female`, `other`, `unknown` or empty (= `unknown`);
//! - `birthdate`, `doctor_registration_date`: `YYYY-MM-DD`;
//! - `jma_member`: `true`, `false`, `1`, `0` or empty (= false); `TRUE`/`FALSE` as
//!   spreadsheets write them are accepted too;
//! - anything else: free text.
//!
//! Parsing is all or nothing: the first problem is returned as a [`CsvError`] naming the
//! line (1 is the header) and the column, and no row is returned. A holder ID may appear
//! once per file; at most [`MAX_ROWS`] rows are read.

use std::collections::HashMap;
use std::io::Read;

use idp_core::doctor::{DoctorProfile, Gender};

use crate::database::parse_date;

/// Every column the import file may have, in the documented order.
pub const COLUMNS: [&str; 20] = [
    "hpki_holder_id",
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "family_name_latin",
    "given_name_latin",
    "gender",
    "birthdate",
    "email",
    "postal_code",
    "prefecture",
    "address",
    "jma_member_id",
    "jma_member",
    "medical_association_prefecture",
    "medical_association_district",
    "doctor_registration_number",
    "doctor_registration_date",
    "hpki_role",
];

/// The columns the header must have (and whose values must not be empty).
pub const REQUIRED_COLUMNS: [&str; 3] = ["hpki_holder_id", "family_name", "given_name"];

/// The most data rows one file may hold.
pub const MAX_ROWS: usize = 1_000_000;

/// Why an import file was refused. Line numbers are 1-based; line 1 is the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// The file has no header line.
    #[error("line 1: the file is empty (expected a header line)")]
    Empty,
    /// A header column is not one of [`COLUMNS`].
    #[error("line 1: unknown column {0:?}")]
    UnknownColumn(String),
    /// A header column appears twice.
    #[error("line 1: duplicate column {0:?}")]
    DuplicateColumn(String),
    /// A column of [`REQUIRED_COLUMNS`] is missing from the header.
    #[error("line 1: missing required column {0}")]
    MissingColumn(&'static str),
    /// A value is not acceptable for its column.
    #[error("line {line}, column {column}: {problem}")]
    Field {
        /// The line the row starts on.
        line: u64,
        /// The column.
        column: &'static str,
        /// What is wrong with the value.
        problem: FieldProblem,
    },
    /// A holder ID appears on two rows.
    #[error(
        "line {line}, column hpki_holder_id: {holder_id:?} already appears on line {first_line}"
    )]
    DuplicateHolder {
        /// The line of the second occurrence.
        line: u64,
        /// The line of the first occurrence.
        first_line: u64,
        /// The holder ID.
        holder_id: String,
    },
    /// A row is not well-formed CSV or has the wrong number of fields.
    #[error("line {line}: {message}")]
    Malformed {
        /// The line the row starts on.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The file has more than [`MAX_ROWS`] data rows.
    #[error("line {line}: too many rows (at most {max})")]
    TooManyRows {
        /// The line of the first row over the limit.
        line: u64,
        /// The limit ([`MAX_ROWS`]).
        max: usize,
    },
    /// Reading the input failed.
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// A required value is empty.
    #[error("required, but empty")]
    Required,
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not a `YYYY-MM-DD` calendar date.
    #[error("not a date (YYYY-MM-DD): {0:?}")]
    NotADate(String),
    /// Not one of the gender values.
    #[error("not a gender (male, female, other, unknown or empty): {0:?}")]
    NotAGender(String),
    /// Not one of the boolean values.
    #[error("not a boolean (true, false, 1, 0 or empty): {0:?}")]
    NotABoolean(String),
}

/// Parses a doctor import file into profiles, in file order. See the [module
/// docs](self) for the format.
pub fn parse_doctors<R: Read>(reader: R) -> Result<Vec<DoctorProfile>, CsvError> {
    parse_with_limit(reader, MAX_ROWS)
}

fn parse_with_limit<R: Read>(reader: R, max_rows: usize) -> Result<Vec<DoctorProfile>, CsvError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();

    if !csv.read_byte_record(&mut record).map_err(csv_error)? {
        return Err(CsvError::Empty);
    }
    let columns = header(&record)?;

    let mut profiles = Vec::new();
    let mut holders: HashMap<String, u64> = HashMap::new();
    while csv.read_byte_record(&mut record).map_err(csv_error)? {
        let line = line_of(&record);
        if profiles.len() >= max_rows {
            return Err(CsvError::TooManyRows {
                line,
                max: max_rows,
            });
        }
        let row = Row {
            record: &record,
            columns: &columns,
            line,
        };
        let profile = row.profile()?;
        if let Some(&first_line) = holders.get(&profile.hpki_holder_id) {
            return Err(CsvError::DuplicateHolder {
                line,
                first_line,
                holder_id: profile.hpki_holder_id,
            });
        }
        holders.insert(profile.hpki_holder_id.clone(), line);
        profiles.push(profile);
    }
    Ok(profiles)
}

/// For each entry of [`COLUMNS`], its position in the file, if present.
type ColumnMap = [Option<usize>; COLUMNS.len()];

fn header(record: &csv::ByteRecord) -> Result<ColumnMap, CsvError> {
    let mut columns: ColumnMap = [None; COLUMNS.len()];
    for (position, raw) in record.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| CsvError::UnknownColumn(String::from_utf8_lossy(raw).into_owned()))?
            .trim_matches(|c: char| c.is_ascii_whitespace());
        let index = COLUMNS
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| CsvError::UnknownColumn(name.to_owned()))?;
        if columns[index].replace(position).is_some() {
            return Err(CsvError::DuplicateColumn(name.to_owned()));
        }
    }
    for required in REQUIRED_COLUMNS {
        let present = COLUMNS
            .iter()
            .position(|c| *c == required)
            .and_then(|index| columns[index]);
        if present.is_none() {
            return Err(CsvError::MissingColumn(required));
        }
    }
    Ok(columns)
}

fn line_of(record: &csv::ByteRecord) -> u64 {
    record.position().map_or(0, csv::Position::line)
}

fn csv_error(error: csv::Error) -> CsvError {
    let line = error.position().map_or(0, csv::Position::line);
    match error.into_kind() {
        csv::ErrorKind::Io(e) => CsvError::Io(e.to_string()),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => CsvError::Malformed {
            line: pos.map_or(line, |p| p.line()),
            message: format!("expected {expected_len} fields as in the header, found {len}"),
        },
        other => CsvError::Malformed {
            line,
            message: format!("{other:?}"),
        },
    }
}

/// One data row, read through the header's column map.
struct Row<'a> {
    record: &'a csv::ByteRecord,
    columns: &'a ColumnMap,
    line: u64,
}

impl Row<'_> {
    fn error(&self, column: &'static str, problem: FieldProblem) -> CsvError {
        CsvError::Field {
            line: self.line,
            column,
            problem,
        }
    }

    /// The trimmed value of `column`, `None` if the column is absent or the value empty.
    fn text(&self, column: &'static str) -> Result<Option<String>, CsvError> {
        let index = COLUMNS.iter().position(|c| *c == column);
        let Some(raw) = index
            .and_then(|i| self.columns[i])
            .and_then(|position| self.record.get(position))
        else {
            return Ok(None);
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| self.error(column, FieldProblem::NotUtf8))?
            .trim_matches(|c: char| c.is_ascii_whitespace());
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    fn required(&self, column: &'static str) -> Result<String, CsvError> {
        self.text(column)?
            .ok_or_else(|| self.error(column, FieldProblem::Required))
    }

    fn date(&self, column: &'static str) -> Result<Option<time::Date>, CsvError> {
        self.text(column)?
            .map(|text| {
                parse_date(&text).ok_or_else(|| self.error(column, FieldProblem::NotADate(text)))
            })
            .transpose()
    }

    fn profile(&self) -> Result<DoctorProfile, CsvError> {
        // Checked in column order, so the first problem of a row is the one reported.
        let hpki_holder_id = self.required("hpki_holder_id")?;
        let family_name = self.required("family_name")?;
        let given_name = self.required("given_name")?;
        let gender = match self.text("gender")? {
            None => Gender::Unknown,
            Some(text) => Gender::parse(&text.to_ascii_lowercase())
                .ok_or_else(|| self.error("gender", FieldProblem::NotAGender(text)))?,
        };
        let jma_member = match self.text("jma_member")? {
            None => false,
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(self.error("jma_member", FieldProblem::NotABoolean(text))),
            },
        };
        Ok(DoctorProfile {
            hpki_holder_id,
            family_name,
            given_name,
            family_name_kana: self.text("family_name_kana")?,
            given_name_kana: self.text("given_name_kana")?,
            family_name_latin: self.text("family_name_latin")?,
            given_name_latin: self.text("given_name_latin")?,
            gender,
            birthdate: self.date("birthdate")?,
            email: self.text("email")?,
            postal_code: self.text("postal_code")?,
            prefecture: self.text("prefecture")?,
            address: self.text("address")?,
            jma_member_id: self.text("jma_member_id")?,
            jma_member,
            medical_association_prefecture: self.text("medical_association_prefecture")?,
            medical_association_district: self.text("medical_association_district")?,
            doctor_registration_number: self.text("doctor_registration_number")?,
            doctor_registration_date: self.date("doctor_registration_date")?,
            hpki_role: self.text("hpki_role")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{CsvError, parse_with_limit};

    #[test]
    fn rows_beyond_the_limit_are_refused() {
        let csv = "hpki_holder_id,family_name,given_name\nA,F,G\nB,F,G\nC,F,G\n";
        assert_eq!(parse_with_limit(csv.as_bytes(), 3).map(|p| p.len()), Ok(3));
        assert_eq!(
            parse_with_limit(csv.as_bytes(), 2),
            Err(CsvError::TooManyRows { line: 4, max: 2 })
        );
    }
}
