//! [`ConsentStore`] over the `consents` table; scopes and claim names are JSON arrays.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::doctor::DoctorId;
use idp_core::store::{Consent, ConsentStore, StoreError};
use time::OffsetDateTime;

use super::doctors::db_error;
use super::refresh::Tokens;
use super::schema::consents;
use super::{Database, stored_time, write_transaction};

/// A row of `consents`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = consents)]
struct ConsentRow {
    doctor_id: String,
    client_id: String,
    scopes: String,
    claims: String,
    granted_at: i64,
    policy_version: Option<String>,
}

impl ConsentRow {
    fn new(consent: &Consent) -> Result<Self, StoreError> {
        let json = |names: &[String]| {
            serde_json::to_string(names)
                .map_err(|e| StoreError::Conflict(format!("names cannot be serialised: {e}")))
        };
        Ok(Self {
            doctor_id: consent.doctor_id.as_str().to_owned(),
            client_id: consent.client_id.clone(),
            scopes: json(&consent.scopes)?,
            claims: json(&consent.claims)?,
            granted_at: consent.granted_at.unix_timestamp(),
            policy_version: consent.policy_version.clone(),
        })
    }

    /// The domain record, or [`StoreError::Corrupt`] naming the consent and the column.
    fn into_consent(self) -> Result<Consent, StoreError> {
        let what = |column: &str| {
            format!(
                "consent of doctor {} for client {}: column {column}",
                self.doctor_id, self.client_id
            )
        };
        let names = |column: &str, value: &str| {
            serde_json::from_str::<Vec<String>>(value).map_err(|e| {
                StoreError::Corrupt(format!(
                    "{} is not a JSON array of names: {e}",
                    what(column)
                ))
            })
        };
        let scopes = names("scopes", &self.scopes)?;
        let claims = names("claims", &self.claims)?;
        let granted_at = stored_time(what("granted_at"), self.granted_at)?;
        Ok(Consent {
            doctor_id: DoctorId::from_stored(self.doctor_id),
            client_id: self.client_id,
            scopes,
            claims,
            granted_at,
            policy_version: self.policy_version,
        })
    }
}

#[async_trait]
impl ConsentStore for Database {
    async fn consent(
        &self,
        doctor: &DoctorId,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let key = (doctor.as_str().to_owned(), client_id.to_owned());
        self.run(move |conn| {
            consents::table
                .find(key)
                .first::<ConsentRow>(conn)
                .optional()
                .map_err(db_error)?
                .map(ConsentRow::into_consent)
                .transpose()
        })
        .await
    }

    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError> {
        let row = ConsentRow::new(consent)?;
        self.run(move |conn| {
            // No upsert clause through MultiBackend: update, else insert. A consent for an
            // unknown doctor violates the foreign key: a Conflict.
            write_transaction(conn, |conn| {
                let updated = diesel::update(
                    consents::table.find((row.doctor_id.as_str(), row.client_id.as_str())),
                )
                .set((
                    consents::scopes.eq(&row.scopes),
                    consents::claims.eq(&row.claims),
                    consents::granted_at.eq(row.granted_at),
                    consents::policy_version.eq(&row.policy_version),
                ))
                .execute(conn)
                .map_err(db_error)?;
                if updated == 0 {
                    diesel::insert_into(consents::table)
                        .values(&row)
                        .execute(conn)
                        .map_err(db_error)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn consents_of(&self, doctor: &DoctorId) -> Result<Vec<Consent>, StoreError> {
        let doctor = doctor.as_str().to_owned();
        self.run(move |conn| {
            consents::table
                .filter(consents::doctor_id.eq(doctor))
                .order(consents::client_id.asc())
                .load::<ConsentRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(ConsentRow::into_consent)
                .collect()
        })
        .await
    }

    async fn revoke_consent(
        &self,
        doctor: &DoctorId,
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = now.unix_timestamp();
        let doctor = doctor.as_str().to_owned();
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let removed =
                    diesel::delete(consents::table.find((doctor.as_str(), client_id.as_str())))
                        .execute(conn)
                        .map_err(db_error)?;
                Tokens::Grant {
                    doctor: &doctor,
                    client: &client_id,
                }
                .revoke(conn, now)?;
                Ok(removed > 0)
            })
        })
        .await
    }
}
