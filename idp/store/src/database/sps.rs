//! [`SpStore`] over the `saml_sps` table: each SP's metadata and settings are kept as
//! registered, under its entity ID, and parsed by the SAML crate when read.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::store::{SpRecord, SpStore, StoreError};
use time::OffsetDateTime;

use super::doctors::db_error;
use super::schema::{consents, saml_sps};
use super::{Database, stored_time, write_transaction};

/// A row of `saml_sps`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = saml_sps)]
struct SpRow {
    entity_id: String,
    metadata: String,
    settings: String,
    fetched_at: i64,
    created_at: i64,
    updated_at: i64,
}

impl SpRow {
    /// The domain record, or [`StoreError::Corrupt`] if `fetched_at` is not a timestamp.
    fn into_record(self) -> Result<SpRecord, StoreError> {
        let fetched_at = stored_time(
            format_args!("SP {}: column fetched_at", self.entity_id),
            self.fetched_at,
        )?;
        Ok(SpRecord {
            entity_id: self.entity_id,
            metadata: self.metadata,
            settings: self.settings,
            fetched_at,
        })
    }
}

#[async_trait]
impl SpStore for Database {
    async fn sp(&self, entity_id: &str) -> Result<Option<SpRecord>, StoreError> {
        let entity_id = entity_id.to_owned();
        self.run(move |conn| {
            saml_sps::table
                .find(entity_id)
                .first::<SpRow>(conn)
                .optional()
                .map_err(db_error)?
                .map(SpRow::into_record)
                .transpose()
        })
        .await
    }

    async fn sps(&self) -> Result<Vec<SpRecord>, StoreError> {
        self.run(|conn| {
            saml_sps::table
                .order(saml_sps::entity_id.asc())
                .load::<SpRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(SpRow::into_record)
                .collect()
        })
        .await
    }

    async fn put_sp(&self, record: &SpRecord, now: OffsetDateTime) -> Result<(), StoreError> {
        let row = SpRow {
            entity_id: record.entity_id.clone(),
            metadata: record.metadata.clone(),
            settings: record.settings.clone(),
            fetched_at: record.fetched_at.unix_timestamp(),
            created_at: now.unix_timestamp(),
            updated_at: now.unix_timestamp(),
        };
        self.run(move |conn| {
            // No upsert clause through MultiBackend: update, else insert. Two concurrent
            // first registrations of one ID on PostgreSQL end in one Conflict (the key).
            write_transaction(conn, |conn| {
                let updated = diesel::update(saml_sps::table.find(&row.entity_id))
                    .set((
                        saml_sps::metadata.eq(&row.metadata),
                        saml_sps::settings.eq(&row.settings),
                        saml_sps::fetched_at.eq(row.fetched_at),
                        saml_sps::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)
                    .map_err(db_error)?;
                if updated == 0 {
                    diesel::insert_into(saml_sps::table)
                        .values(&row)
                        .execute(conn)
                        .map_err(db_error)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn remove_sp(&self, entity_id: &str) -> Result<bool, StoreError> {
        let entity_id = entity_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                diesel::delete(consents::table.filter(consents::client_id.eq(&entity_id)))
                    .execute(conn)
                    .map_err(db_error)?;
                let removed = diesel::delete(saml_sps::table.find(&entity_id))
                    .execute(conn)
                    .map_err(db_error)?;
                Ok(removed > 0)
            })
        })
        .await
    }
}
