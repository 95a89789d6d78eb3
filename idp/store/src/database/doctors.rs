//! [`DoctorDirectory`] over the `doctors` table.

use std::collections::HashSet;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use idp_core::doctor::{Doctor, DoctorId, DoctorOrigin, DoctorProfile, Gender};
use idp_core::store::{DoctorDirectory, ImportReport, StoreError};
use time::{Date, Month, OffsetDateTime};

use super::schema::doctors;
use super::{AnyConnection, Database, write_transaction};

/// A row of `doctors`, in column order.
#[derive(Queryable, Insertable, Clone, Debug)]
#[diesel(table_name = doctors)]
#[diesel(treat_none_as_default_value = false)]
struct DoctorRow {
    id: String,
    hpki_holder_id: String,
    family_name: String,
    given_name: String,
    family_name_kana: Option<String>,
    given_name_kana: Option<String>,
    family_name_latin: Option<String>,
    given_name_latin: Option<String>,
    gender: String,
    birthdate: Option<String>,
    email: Option<String>,
    postal_code: Option<String>,
    prefecture: Option<String>,
    address: Option<String>,
    jma_member_id: Option<String>,
    jma_member: bool,
    medical_association_prefecture: Option<String>,
    medical_association_district: Option<String>,
    doctor_registration_number: Option<String>,
    doctor_registration_date: Option<String>,
    hpki_role: Option<String>,
    origin: String,
    created_at: i64,
    updated_at: i64,
    last_login_at: Option<i64>,
}

/// The columns an import overwrites: the profile and `updated_at`. The record's ID,
/// origin, creation time and last login are kept.
#[derive(AsChangeset, Debug)]
#[diesel(table_name = doctors)]
#[diesel(treat_none_as_null = true)]
struct ProfileChanges {
    family_name: String,
    given_name: String,
    family_name_kana: Option<String>,
    given_name_kana: Option<String>,
    family_name_latin: Option<String>,
    given_name_latin: Option<String>,
    gender: String,
    birthdate: Option<String>,
    email: Option<String>,
    postal_code: Option<String>,
    prefecture: Option<String>,
    address: Option<String>,
    jma_member_id: Option<String>,
    jma_member: bool,
    medical_association_prefecture: Option<String>,
    medical_association_district: Option<String>,
    doctor_registration_number: Option<String>,
    doctor_registration_date: Option<String>,
    hpki_role: Option<String>,
    updated_at: i64,
}

impl ProfileChanges {
    fn new(profile: &DoctorProfile, now: i64) -> Result<Self, StoreError> {
        Ok(Self {
            family_name: profile.family_name.clone(),
            given_name: profile.given_name.clone(),
            family_name_kana: profile.family_name_kana.clone(),
            given_name_kana: profile.given_name_kana.clone(),
            family_name_latin: profile.family_name_latin.clone(),
            given_name_latin: profile.given_name_latin.clone(),
            gender: profile.gender.as_str().to_owned(),
            birthdate: profile.birthdate.map(format_date).transpose()?,
            email: profile.email.clone(),
            postal_code: profile.postal_code.clone(),
            prefecture: profile.prefecture.clone(),
            address: profile.address.clone(),
            jma_member_id: profile.jma_member_id.clone(),
            jma_member: profile.jma_member,
            medical_association_prefecture: profile.medical_association_prefecture.clone(),
            medical_association_district: profile.medical_association_district.clone(),
            doctor_registration_number: profile.doctor_registration_number.clone(),
            doctor_registration_date: profile
                .doctor_registration_date
                .map(format_date)
                .transpose()?,
            hpki_role: profile.hpki_role.clone(),
            updated_at: now,
        })
    }
}

impl DoctorRow {
    fn new(
        id: DoctorId,
        profile: &DoctorProfile,
        origin: DoctorOrigin,
        now: i64,
    ) -> Result<Self, StoreError> {
        let changes = ProfileChanges::new(profile, now)?;
        Ok(Self {
            id: id.as_str().to_owned(),
            hpki_holder_id: profile.hpki_holder_id.clone(),
            family_name: changes.family_name,
            given_name: changes.given_name,
            family_name_kana: changes.family_name_kana,
            given_name_kana: changes.given_name_kana,
            family_name_latin: changes.family_name_latin,
            given_name_latin: changes.given_name_latin,
            gender: changes.gender,
            birthdate: changes.birthdate,
            email: changes.email,
            postal_code: changes.postal_code,
            prefecture: changes.prefecture,
            address: changes.address,
            jma_member_id: changes.jma_member_id,
            jma_member: changes.jma_member,
            medical_association_prefecture: changes.medical_association_prefecture,
            medical_association_district: changes.medical_association_district,
            doctor_registration_number: changes.doctor_registration_number,
            doctor_registration_date: changes.doctor_registration_date,
            hpki_role: changes.hpki_role,
            origin: origin.as_str().to_owned(),
            created_at: now,
            updated_at: now,
            last_login_at: None,
        })
    }

    /// The domain record, or [`StoreError::Corrupt`] naming the record and the column.
    fn into_doctor(self) -> Result<Doctor, StoreError> {
        let id = self.id;
        let corrupt = |column: &str, value: &str, expected: &str| {
            StoreError::Corrupt(format!(
                "doctor {id}: column {column} holds {value:?}, expected {expected}"
            ))
        };
        let gender = Gender::parse(&self.gender)
            .filter(|_| !self.gender.is_empty())
            .ok_or_else(|| corrupt("gender", &self.gender, "male|female|other|unknown"))?;
        let origin = DoctorOrigin::parse(&self.origin)
            .ok_or_else(|| corrupt("origin", &self.origin, "imported|provisioned"))?;
        let date = |column: &str, value: Option<String>| {
            value
                .map(|v| parse_date(&v).ok_or_else(|| corrupt(column, &v, "a YYYY-MM-DD date")))
                .transpose()
        };
        let birthdate = date("birthdate", self.birthdate)?;
        let doctor_registration_date =
            date("doctor_registration_date", self.doctor_registration_date)?;
        let timestamp = |column: &str, value: i64| {
            OffsetDateTime::from_unix_timestamp(value)
                .map_err(|_| corrupt(column, &value.to_string(), "a unix timestamp"))
        };
        let created_at = timestamp("created_at", self.created_at)?;
        let updated_at = timestamp("updated_at", self.updated_at)?;
        let last_login_at = self
            .last_login_at
            .map(|v| timestamp("last_login_at", v))
            .transpose()?;
        if self.hpki_holder_id.is_empty() {
            return Err(corrupt("hpki_holder_id", "", "a holder ID"));
        }
        Ok(Doctor {
            id: DoctorId::from_stored(id.clone()),
            profile: DoctorProfile {
                hpki_holder_id: self.hpki_holder_id,
                family_name: self.family_name,
                given_name: self.given_name,
                family_name_kana: self.family_name_kana,
                given_name_kana: self.given_name_kana,
                family_name_latin: self.family_name_latin,
                given_name_latin: self.given_name_latin,
                gender,
                birthdate,
                email: self.email,
                postal_code: self.postal_code,
                prefecture: self.prefecture,
                address: self.address,
                jma_member_id: self.jma_member_id,
                jma_member: self.jma_member,
                medical_association_prefecture: self.medical_association_prefecture,
                medical_association_district: self.medical_association_district,
                doctor_registration_number: self.doctor_registration_number,
                doctor_registration_date,
                hpki_role: self.hpki_role,
            },
            origin,
            created_at,
            updated_at,
            last_login_at,
        })
    }
}

/// `YYYY-MM-DD`. Years outside 0000–9999 have no such form and are refused.
fn format_date(date: Date) -> Result<String, StoreError> {
    if !(0..=9999).contains(&date.year()) {
        return Err(StoreError::Conflict(format!(
            "date {date} is outside the years 0000-9999"
        )));
    }
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// Parses exactly `YYYY-MM-DD` (ASCII digits, a real calendar date).
pub(crate) fn parse_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = bytes.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, b| Some(acc * 10 + u32::from(b - b'0')))
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// Maps a diesel error to the store's error: constraint violations are conflicts, values
/// that cannot be read are corruption, everything else means the database is unavailable.
pub(crate) fn db_error(error: DieselError) -> StoreError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            StoreError::Conflict(format!("unique constraint violated: {}", info.message()))
        }
        DieselError::DatabaseError(
            DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::ForeignKeyViolation,
            info,
        ) => StoreError::Conflict(format!("constraint violated: {}", info.message())),
        DieselError::DeserializationError(e) => {
            StoreError::Corrupt(format!("unreadable stored value: {e}"))
        }
        other => StoreError::Unavailable(format!("database error: {other}")),
    }
}

fn holder_row(conn: &mut AnyConnection, holder_id: &str) -> Result<Option<DoctorRow>, StoreError> {
    doctors::table
        .filter(doctors::hpki_holder_id.eq(holder_id))
        .first::<DoctorRow>(conn)
        .optional()
        .map_err(db_error)
}

#[async_trait]
impl DoctorDirectory for Database {
    async fn find_by_holder(&self, holder_id: &str) -> Result<Option<Doctor>, StoreError> {
        let holder_id = holder_id.to_owned();
        self.run(move |conn| {
            holder_row(conn, &holder_id)?
                .map(DoctorRow::into_doctor)
                .transpose()
        })
        .await
    }

    async fn find(&self, id: &DoctorId) -> Result<Option<Doctor>, StoreError> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            doctors::table
                .find(id)
                .first::<DoctorRow>(conn)
                .optional()
                .map_err(db_error)?
                .map(DoctorRow::into_doctor)
                .transpose()
        })
        .await
    }

    async fn provision(
        &self,
        profile: &DoctorProfile,
        now: OffsetDateTime,
    ) -> Result<Doctor, StoreError> {
        let row = DoctorRow::new(
            DoctorId::generate(),
            profile,
            DoctorOrigin::Provisioned,
            now.unix_timestamp(),
        )?;
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                if holder_row(conn, &row.hpki_holder_id)?.is_some() {
                    return Err(StoreError::Conflict(
                        "the holder ID is already bound to a doctor".to_owned(),
                    ));
                }
                // A concurrent provisioning on PostgreSQL can still win the race between
                // the check and the insert: the unique index turns that into a Conflict.
                diesel::insert_into(doctors::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(db_error)?;
                Ok(())
            })?;
            row.into_doctor()
        })
        .await
    }

    async fn import(
        &self,
        profiles: &[DoctorProfile],
        now: OffsetDateTime,
    ) -> Result<ImportReport, StoreError> {
        let now = now.unix_timestamp();
        let mut seen = HashSet::with_capacity(profiles.len());
        for profile in profiles {
            if !seen.insert(profile.hpki_holder_id.as_str()) {
                return Err(StoreError::Conflict(
                    "the import holds the same holder ID twice".to_owned(),
                ));
            }
        }
        let profiles = profiles.to_vec();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let mut report = ImportReport::default();
                for profile in &profiles {
                    match holder_row(conn, &profile.hpki_holder_id)? {
                        Some(existing) => {
                            diesel::update(doctors::table.find(existing.id))
                                .set(ProfileChanges::new(profile, now)?)
                                .execute(conn)
                                .map_err(db_error)?;
                            report.updated += 1;
                        }
                        None => {
                            let row = DoctorRow::new(
                                DoctorId::generate(),
                                profile,
                                DoctorOrigin::Imported,
                                now,
                            )?;
                            diesel::insert_into(doctors::table)
                                .values(&row)
                                .execute(conn)
                                .map_err(db_error)?;
                            report.inserted += 1;
                        }
                    }
                }
                Ok(report)
            })
        })
        .await
    }

    async fn record_login(&self, id: &DoctorId, at: OffsetDateTime) -> Result<(), StoreError> {
        let id = id.as_str().to_owned();
        let at = at.unix_timestamp();
        let updated = self
            .run(move |conn| {
                diesel::update(doctors::table.find(id))
                    .set(doctors::last_login_at.eq(Some(at)))
                    .execute(conn)
                    .map_err(db_error)
            })
            .await?;
        if updated == 0 {
            return Err(StoreError::Conflict("no doctor has this ID".to_owned()));
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Doctor>, StoreError> {
        self.run(|conn| {
            doctors::table
                .order(doctors::hpki_holder_id.asc())
                .load::<DoctorRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(DoctorRow::into_doctor)
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("SELECT 1").map_err(db_error)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{format_date, parse_date};
    use time::macros::date;

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_date("1970-01-01"), Some(date!(1970 - 01 - 01)));
        assert_eq!(parse_date("2024-02-29"), Some(date!(2024 - 02 - 29)));
        assert_eq!(
            format_date(date!(0987 - 06 - 05)).ok().as_deref(),
            Some("0987-06-05")
        );
        for bad in [
            "1970/01/01",
            "1970-1-01",
            "70-01-01",
            "2023-02-29",
            "1970-13-01",
            "+970-01-01",
            "1970-01-01 ",
            "１９７０-01-01",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }
}
