//! [`RefreshTokenStore`] over the `refresh_tokens` table: families of tokens stored by
//! digest, rotated once, revoked as a whole on reuse (RFC 9700 §4.14.2).
//!
//! Rotation is race-free on both backends: the token is claimed by a conditional
//! `UPDATE … SET used_at = now WHERE … AND used_at IS NULL`, and only the transaction
//! whose update changed the row stores a successor. On PostgreSQL (READ COMMITTED) a
//! concurrent claimant waits for the row, re-checks the condition against the committed
//! row and changes nothing; on SQLite write transactions are serialised anyway
//! (`BEGIN IMMEDIATE`). Bulk revocations and deletions ([`Tokens`]) lock their rows in
//! digest order and repeat until nothing is left, so that they neither deadlock with each
//! other nor miss a successor committed meanwhile.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::doctor::DoctorId;
use idp_core::store::{RefreshRecord, RefreshTokenStore, Rotation, StoreError};
use time::OffsetDateTime;

use super::doctors::db_error;
use super::schema::refresh_tokens;
use super::{AnyConnection, Database, stored_time, write_transaction};

/// A row of `refresh_tokens`, in column order. No `Debug`: it holds the token digest.
#[derive(Queryable, Insertable)]
#[diesel(table_name = refresh_tokens)]
#[diesel(treat_none_as_default_value = false)]
struct RefreshRow {
    token_digest: String,
    family_id: String,
    client_id: String,
    doctor_id: String,
    grant_json: String,
    issued_at: i64,
    expires_at: i64,
    family_expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl RefreshRow {
    /// A fresh (unused, unrevoked) row for `record`.
    fn new(record: &RefreshRecord) -> Self {
        Self {
            token_digest: record.token_digest.clone(),
            family_id: record.family_id.clone(),
            client_id: record.client_id.clone(),
            doctor_id: record.doctor_id.as_str().to_owned(),
            grant_json: record.grant.clone(),
            issued_at: record.issued_at.unix_timestamp(),
            expires_at: record.expires_at.unix_timestamp(),
            family_expires_at: record.family_expires_at.unix_timestamp(),
            used_at: None,
            revoked_at: None,
        }
    }

    /// The domain record, or [`StoreError::Corrupt`] naming the family and the column
    /// (never the digest: it identifies a live token).
    fn into_record(self) -> Result<RefreshRecord, StoreError> {
        let family = &self.family_id;
        let time = |column: &str, value: i64| {
            stored_time(
                format_args!("refresh token of family {family}: column {column}"),
                value,
            )
        };
        let issued_at = time("issued_at", self.issued_at)?;
        let expires_at = time("expires_at", self.expires_at)?;
        let family_expires_at = time("family_expires_at", self.family_expires_at)?;
        Ok(RefreshRecord {
            token_digest: self.token_digest,
            family_id: self.family_id,
            client_id: self.client_id,
            doctor_id: DoctorId::from_stored(self.doctor_id),
            grant: self.grant_json,
            issued_at,
            expires_at,
            family_expires_at,
        })
    }
}

/// A set of refresh tokens revoked or deleted in bulk.
#[derive(Clone, Copy)]
pub(super) enum Tokens<'a> {
    /// Every token of one family.
    Family(&'a str),
    /// Every token of one doctor for one client (every family of their consent).
    Grant { doctor: &'a str, client: &'a str },
    /// Every token of one client.
    Client(&'a str),
}

/// Evaluates `$body` with `$rows` bound to `refresh_tokens` filtered to `$tokens` (one
/// expansion per variant: the filtered tables have different types).
macro_rules! scoped {
    ($tokens:expr, |$rows:ident| $body:expr) => {
        match $tokens {
            Tokens::Family(family) => {
                let $rows = refresh_tokens::table.filter(refresh_tokens::family_id.eq(family));
                $body
            }
            Tokens::Grant { doctor, client } => {
                let $rows = refresh_tokens::table
                    .filter(refresh_tokens::doctor_id.eq(doctor))
                    .filter(refresh_tokens::client_id.eq(client));
                $body
            }
            Tokens::Client(client) => {
                let $rows = refresh_tokens::table.filter(refresh_tokens::client_id.eq(client));
                $body
            }
        }
    };
}

impl Tokens<'_> {
    /// Marks every unrevoked token of the set revoked at `now`; returns how many.
    pub(super) fn revoke(self, conn: &mut AnyConnection, now: i64) -> Result<u64, StoreError> {
        self.until_settled(conn, |conn| {
            scoped!(self, |rows| diesel::update(
                rows.filter(refresh_tokens::revoked_at.is_null())
            )
            .set(refresh_tokens::revoked_at.eq(Some(now)))
            .execute(conn))
        })
    }

    /// Deletes every token of the set; returns how many.
    pub(super) fn delete(self, conn: &mut AnyConnection) -> Result<u64, StoreError> {
        self.until_settled(conn, |conn| {
            scoped!(self, |rows| diesel::delete(rows).execute(conn))
        })
    }

    /// Runs `statement` (an `UPDATE` or `DELETE` of the set) until it changes no row;
    /// returns how many rows it changed in all. On PostgreSQL each round first locks the
    /// rows of the set, in digest order. Under READ COMMITTED:
    /// - A statement sees the rows committed when it started. Waiting for a rotation that
    ///   holds one of its rows, it misses the successor that rotation commits; and a
    ///   successor not yet locked can itself be rotated before the next statement. The
    ///   round that changes nothing ends it: a rotation in flight on any row it saw would
    ///   have made it wait and then change that row.
    /// - A bulk `UPDATE` locks rows in scan order, which follows where each row's newest
    ///   version happens to lie; two of them over one family (two presentations of a used
    ///   token) could take the rows in opposite orders and deadlock. Every set that holds a
    ///   token holds its whole family, so one global order (the digest) rules that out.
    ///
    /// SQLite write transactions run one at a time: there the second round changes nothing.
    fn until_settled(
        self,
        conn: &mut AnyConnection,
        mut statement: impl FnMut(&mut AnyConnection) -> QueryResult<usize>,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            if let AnyConnection::Postgresql(pg) = conn {
                scoped!(self, |rows| rows
                    .select(refresh_tokens::token_digest)
                    .order(refresh_tokens::token_digest)
                    .for_update()
                    .execute(pg))
                .map_err(db_error)?;
            }
            match statement(conn).map_err(db_error)? {
                0 => return Ok(total),
                changed => total += changed as u64,
            }
        }
    }
}

fn find_row(conn: &mut AnyConnection, digest: &str) -> Result<Option<RefreshRow>, StoreError> {
    refresh_tokens::table
        .find(digest)
        .first::<RefreshRow>(conn)
        .optional()
        .map_err(db_error)
}

#[async_trait]
impl RefreshTokenStore for Database {
    async fn insert_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let row = RefreshRow::new(record);
        self.run(move |conn| {
            diesel::insert_into(refresh_tokens::table)
                .values(&row)
                .execute(conn)
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        presented_digest: &str,
        client_id: &str,
        next_digest: &str,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Rotation, StoreError> {
        let presented = presented_digest.to_owned();
        let client_id = client_id.to_owned();
        let next_digest = next_digest.to_owned();
        let next_expires_at = next_expires_at.unix_timestamp();
        let now = now.unix_timestamp();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                // Claim the token: only a live, unused one changes.
                let claimed = diesel::update(
                    refresh_tokens::table
                        .find(&presented)
                        .filter(refresh_tokens::client_id.eq(&client_id))
                        .filter(refresh_tokens::used_at.is_null())
                        .filter(refresh_tokens::revoked_at.is_null())
                        .filter(refresh_tokens::expires_at.gt(now))
                        .filter(refresh_tokens::family_expires_at.gt(now)),
                )
                .set(refresh_tokens::used_at.eq(Some(now)))
                .execute(conn)
                .map_err(db_error)?;

                let Some(row) = find_row(conn, &presented)? else {
                    return Ok(Rotation::Invalid);
                };
                if claimed == 0 {
                    // Unknown, revoked, expired or another client's: nothing changes. A
                    // used one (earlier, or by a concurrent presentation that won the
                    // claim) is reuse: the whole family goes.
                    // A spent token stays evidence of theft after its own expiry, for as
                    // long as its family lives.
                    let reused = row.used_at.is_some()
                        && row.client_id == client_id
                        && row.revoked_at.is_none()
                        && row.family_expires_at > now;
                    if !reused {
                        return Ok(Rotation::Invalid);
                    }
                    Tokens::Family(&row.family_id).revoke(conn, now)?;
                    return Ok(Rotation::Reused {
                        family_id: row.family_id,
                        doctor_id: DoctorId::from_stored(row.doctor_id),
                    });
                }

                let successor = RefreshRow {
                    token_digest: next_digest,
                    family_id: row.family_id.clone(),
                    client_id: row.client_id.clone(),
                    doctor_id: row.doctor_id.clone(),
                    grant_json: row.grant_json.clone(),
                    issued_at: now,
                    expires_at: next_expires_at.min(row.family_expires_at),
                    family_expires_at: row.family_expires_at,
                    used_at: None,
                    revoked_at: None,
                };
                diesel::insert_into(refresh_tokens::table)
                    .values(&successor)
                    .execute(conn)
                    .map_err(db_error)?;
                Ok(Rotation::Rotated(row.into_record()?))
            })
        })
        .await
    }

    async fn live_refresh(
        &self,
        token_digest: &str,
        now: OffsetDateTime,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let digest = token_digest.to_owned();
        let now = now.unix_timestamp();
        self.run(move |conn| {
            refresh_tokens::table
                .find(digest)
                .filter(refresh_tokens::used_at.is_null())
                .filter(refresh_tokens::revoked_at.is_null())
                .filter(refresh_tokens::expires_at.gt(now))
                .filter(refresh_tokens::family_expires_at.gt(now))
                .first::<RefreshRow>(conn)
                .optional()
                .map_err(db_error)?
                .map(RefreshRow::into_record)
                .transpose()
        })
        .await
    }

    async fn revoke_refresh_family(
        &self,
        token_digest: &str,
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<DoctorId>, StoreError> {
        let digest = token_digest.to_owned();
        let client_id = client_id.to_owned();
        let now = now.unix_timestamp();
        self.run(move |conn| {
            write_transaction(conn, |conn| match find_row(conn, &digest)? {
                Some(row) if row.client_id == client_id => {
                    let revoked = Tokens::Family(&row.family_id).revoke(conn, now)? > 0;
                    Ok(revoked.then(|| DoctorId::from_stored(row.doctor_id)))
                }
                _ => Ok(None),
            })
        })
        .await
    }

    async fn prune_refresh(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before = before.unix_timestamp();
        self.run(move |conn| {
            let deleted = diesel::delete(
                refresh_tokens::table.filter(refresh_tokens::family_expires_at.lt(before)),
            )
            .execute(conn)
            .map_err(db_error)?;
            Ok(deleted as u64)
        })
        .await
    }
}
