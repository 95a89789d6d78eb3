//! [`KeyStore`] over the `signing_keys` table. The private key is a secret: it is never
//! put in an error or a log, and rows holding it have no `Debug`.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::oidc::client::SigningAlg;
use idp_core::store::{KeyStore, StoreError, StoredKey};

use super::doctors::db_error;
use super::schema::signing_keys;
use super::{Database, stored_time, write_transaction};

/// A row of `signing_keys`, in column order. No `Debug`: it holds the private key.
#[derive(Queryable, Insertable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    kid: String,
    alg: String,
    private_key_pem: String,
    created_at: i64,
    active_from: i64,
}

impl KeyRow {
    fn new(key: &StoredKey) -> Self {
        Self {
            kid: key.kid.clone(),
            alg: key.alg.as_str().to_owned(),
            private_key_pem: key.pkcs8_pem.clone(),
            created_at: key.created_at.unix_timestamp(),
            active_from: key.active_from.unix_timestamp(),
        }
    }

    /// The domain record, or [`StoreError::Corrupt`] naming the key and the column.
    fn into_key(self) -> Result<StoredKey, StoreError> {
        let kid = self.kid;
        let alg = SigningAlg::ALL
            .into_iter()
            .find(|alg| alg.as_str() == self.alg)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "signing key {kid}: column alg holds {:?}, expected RS256|PS256|ES256|EdDSA",
                    self.alg
                ))
            })?;
        let created_at = stored_time(
            format_args!("signing key {kid}: column created_at"),
            self.created_at,
        )?;
        let active_from = stored_time(
            format_args!("signing key {kid}: column active_from"),
            self.active_from,
        )?;
        Ok(StoredKey {
            kid,
            alg,
            pkcs8_pem: self.private_key_pem,
            created_at,
            active_from,
        })
    }
}

#[async_trait]
impl KeyStore for Database {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.run(|conn| {
            signing_keys::table
                .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
                .load::<KeyRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(KeyRow::into_key)
                .collect()
        })
        .await
    }

    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let row = KeyRow::new(key);
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let exists = signing_keys::table
                    .find(&row.kid)
                    .select(signing_keys::kid)
                    .first::<String>(conn)
                    .optional()
                    .map_err(db_error)?
                    .is_some();
                if exists {
                    return Err(StoreError::Conflict(format!(
                        "a signing key with kid {} is already stored",
                        row.kid
                    )));
                }
                // A concurrent insert on PostgreSQL can still win the race between the
                // check and the insert: the primary key turns that into a Conflict.
                diesel::insert_into(signing_keys::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(db_error)?;
                Ok(())
            })
        })
        .await
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let kid = kid.to_owned();
        self.run(move |conn| {
            let removed = diesel::delete(signing_keys::table.find(kid))
                .execute(conn)
                .map_err(db_error)?;
            Ok(removed > 0)
        })
        .await
    }
}
