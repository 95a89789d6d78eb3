//! The doctor import file: good files and every kind of refusal, with its line number.

use idp_core::doctor::{DoctorProfile, Gender};
use idp_store::csv_import::{COLUMNS, CsvError, FieldProblem, parse_doctors};
use time::macros::date;

const HEADER: &str = "hpki_holder_id,family_name,given_name,family_name_kana,given_name_kana,\
family_name_latin,given_name_latin,gender,birthdate,email,postal_code,prefecture,address,\
jma_member_id,jma_member,medical_association_prefecture,medical_association_district,\
doctor_registration_number,doctor_registration_date,hpki_role";

fn parse(text: &str) -> Result<Vec<DoctorProfile>, CsvError> {
    parse_doctors(text.as_bytes())
}

fn error(text: &str) -> CsvError {
    parse(text).expect_err("the file is refused")
}

#[test]
fn a_complete_file() {
    assert_eq!(HEADER.split(',').collect::<Vec<_>>(), COLUMNS);
    let text = format!(
        "{HEADER}\r\n\
         JPHPKI-1,日医,太郎,ニチイ,タロウ,NICHII,TARO,male,1970-01-01,taro@example.jp,700-0000,\
         岡山県,\"岡山市北区丸の内１丁目, 医師会館\",JMA-1,true,岡山県医師会,岡山市医師会,\
         456789,1996-05-10,Medical Doctor\r\n\
         JPHPKI-2,医師,花子,,,,,female,,,,,,,0,,,,,\r\n\
         JPHPKI-3,  山田 , 次郎　,,,,,,,,,,,,,,,,,\r\n"
    );
    let profiles = parse(&text).expect("parses");
    assert_eq!(profiles.len(), 3);
    assert_eq!(
        profiles[0],
        DoctorProfile {
            hpki_holder_id: "JPHPKI-1".to_owned(),
            family_name: "日医".to_owned(),
            given_name: "太郎".to_owned(),
            family_name_kana: Some("ニチイ".to_owned()),
            given_name_kana: Some("タロウ".to_owned()),
            family_name_latin: Some("NICHII".to_owned()),
            given_name_latin: Some("TARO".to_owned()),
            gender: Gender::Male,
            birthdate: Some(date!(1970 - 01 - 01)),
            email: Some("taro@example.jp".to_owned()),
            postal_code: Some("700-0000".to_owned()),
            prefecture: Some("岡山県".to_owned()),
            address: Some("岡山市北区丸の内１丁目, 医師会館".to_owned()),
            jma_member_id: Some("JMA-1".to_owned()),
            jma_member: true,
            medical_association_prefecture: Some("岡山県医師会".to_owned()),
            medical_association_district: Some("岡山市医師会".to_owned()),
            doctor_registration_number: Some("456789".to_owned()),
            doctor_registration_date: Some(date!(1996 - 05 - 10)),
            hpki_role: Some("Medical Doctor".to_owned()),
        }
    );
    assert_eq!(profiles[1].gender, Gender::Female);
    assert_eq!(profiles[1].email, None);
    assert!(!profiles[1].jma_member);
    // ASCII whitespace is trimmed; a full-width space is content.
    assert_eq!(profiles[2].family_name, "山田");
    assert_eq!(profiles[2].given_name, "次郎\u{3000}");
    assert_eq!(profiles[2].gender, Gender::Unknown);
}

#[test]
fn columns_in_any_order_and_optional_ones_left_out() {
    let text = "given_name,jma_member,hpki_holder_id,family_name\n\
                太郎,1,JPHPKI-1,日医\n\
                花子,FALSE,JPHPKI-2,医師\n";
    let profiles = parse(text).expect("parses");
    assert_eq!(profiles.len(), 2);
    assert_eq!(profiles[0].hpki_holder_id, "JPHPKI-1");
    assert_eq!(profiles[0].family_name, "日医");
    assert!(profiles[0].jma_member);
    assert!(!profiles[1].jma_member);
    assert_eq!(profiles[1].birthdate, None);
}

#[test]
fn a_utf8_bom_is_accepted() {
    let text = "\u{feff}hpki_holder_id,family_name,given_name\nJPHPKI-1,日医,太郎\n";
    let profiles = parse(text).expect("parses");
    assert_eq!(profiles[0].hpki_holder_id, "JPHPKI-1");
}

#[test]
fn a_header_only_file_has_no_rows() {
    assert_eq!(
        parse("hpki_holder_id,family_name,given_name\n"),
        Ok(Vec::new())
    );
}

#[test]
fn header_errors() {
    assert_eq!(error(""), CsvError::Empty);
    assert_eq!(
        error("hpki_holder_id,family_name,given_name,nickname\n"),
        CsvError::UnknownColumn("nickname".to_owned())
    );
    assert_eq!(
        error("hpki_holder_id,family_name,given_name,email,email\n"),
        CsvError::DuplicateColumn("email".to_owned())
    );
    let missing = error("hpki_holder_id,family_name,email\n");
    assert_eq!(missing, CsvError::MissingColumn("given_name"));
    assert_eq!(
        missing.to_string(),
        "line 1: missing required column given_name"
    );
}

#[test]
fn field_errors_name_line_and_column() {
    let cases = [
        (
            "hpki_holder_id,family_name,given_name,birthdate\nA,F,G,1970-01-01\nB,F,G,1970/01/01\n",
            3,
            "birthdate",
            FieldProblem::NotADate("1970/01/01".to_owned()),
        ),
        (
            "hpki_holder_id,family_name,given_name,doctor_registration_date\nA,F,G,2023-02-29\n",
            2,
            "doctor_registration_date",
            FieldProblem::NotADate("2023-02-29".to_owned()),
        ),
        (
            "hpki_holder_id,family_name,given_name,gender\nA,F,G,male\nB,F,G,男\n",
            3,
            "gender",
            FieldProblem::NotAGender("男".to_owned()),
        ),
        (
            "hpki_holder_id,family_name,given_name,jma_member\nA,F,G,yes\n",
            2,
            "jma_member",
            FieldProblem::NotABoolean("yes".to_owned()),
        ),
        (
            "hpki_holder_id,family_name,given_name\nA,F,G\n,F,G\n",
            3,
            "hpki_holder_id",
            FieldProblem::Required,
        ),
        (
            "hpki_holder_id,family_name,given_name\nA, ,G\n",
            2,
            "family_name",
            FieldProblem::Required,
        ),
        (
            "hpki_holder_id,family_name,given_name\nA,F,\n",
            2,
            "given_name",
            FieldProblem::Required,
        ),
    ];
    for (text, line, column, problem) in cases {
        assert_eq!(
            error(text),
            CsvError::Field {
                line,
                column,
                problem
            },
            "{text}"
        );
    }
    assert_eq!(
        error(
            "hpki_holder_id,family_name,given_name,birthdate\nA,F,G,1970-01-01\nB,F,G,1970/01/01\n"
        )
        .to_string(),
        r#"line 3, column birthdate: not a date (YYYY-MM-DD): "1970/01/01""#
    );
}

#[test]
fn line_numbers_follow_multi_line_quoted_values() {
    let text = "hpki_holder_id,family_name,given_name,address\n\
                A,F,G,\"line one\nline two\"\n\
                B,F,G,x\n\
                C,,G,x\n";
    assert_eq!(
        error(text),
        CsvError::Field {
            line: 5,
            column: "family_name",
            problem: FieldProblem::Required
        }
    );
}

#[test]
fn non_utf8_is_refused() {
    // "日医" in Shift_JIS.
    let mut bytes = b"hpki_holder_id,family_name,given_name\nA,".to_vec();
    bytes.extend_from_slice(&[0x93, 0xfa, 0x88, 0xe3]);
    bytes.extend_from_slice(b",G\n");
    assert_eq!(
        parse_doctors(bytes.as_slice()),
        Err(CsvError::Field {
            line: 2,
            column: "family_name",
            problem: FieldProblem::NotUtf8
        })
    );
}

#[test]
fn duplicate_holder_ids_are_refused() {
    let err = error("hpki_holder_id,family_name,given_name\nA,F,G\nB,F,G\nA,F,H\n");
    assert_eq!(
        err,
        CsvError::DuplicateHolder {
            line: 4,
            first_line: 2,
            holder_id: "A".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"line 4, column hpki_holder_id: "A" already appears on line 2"#
    );
}

#[test]
fn rows_with_the_wrong_number_of_fields_are_refused() {
    let err = error("hpki_holder_id,family_name,given_name\nA,F,G\nB,F\n");
    assert!(
        matches!(&err, CsvError::Malformed { line: 3, message } if message.contains("found 2")),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("line 3: "), "{err}");
}
