//! Tokens, stored hashed. A token's secret is 256 random bits shown once at creation; only
//! its SHA-256 is kept (a slow password hash buys nothing for secrets with this much entropy).
//! Verified tokens are cached for a few seconds, so a call costs no database round trip;
//! revocation therefore takes effect everywhere within that time, and at once in the process
//! that revoked.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Principal, Role};
use crate::{
    db::{Db, Migrations},
    error::StoreError,
    time::{Clock, Micros},
};

const MIGRATIONS: Migrations = Migrations {
    sqlite: &[(
        100,
        "tokens",
        "CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL UNIQUE,
            principal TEXT NOT NULL,
            role TEXT NOT NULL,
            place_scope TEXT NOT NULL,
            unit_scope TEXT NOT NULL,
            description TEXT NOT NULL,
            create_time INTEGER NOT NULL,
            expire_time INTEGER,
            revoke_time INTEGER
        );
        CREATE INDEX tokens_principal ON tokens (principal);",
    )],
    postgres: &[(
        100,
        "tokens",
        "CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL UNIQUE,
            principal TEXT NOT NULL,
            role TEXT NOT NULL,
            place_scope TEXT NOT NULL,
            unit_scope TEXT NOT NULL,
            description TEXT NOT NULL,
            create_time BIGINT NOT NULL,
            expire_time BIGINT,
            revoke_time BIGINT
        );
        CREATE INDEX tokens_principal ON tokens (principal);",
    )],
};

/// How long a verification result is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The id of the token created on first start.
const BOOTSTRAP_ADMIN_ID: &str = "bootstrap-admin";

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id.
    pub id: String,
    /// Who holds it.
    pub principal: String,
    /// Its role.
    pub role: Role,
    /// Place scope, empty for none.
    pub place_scope: String,
    /// Unit scope, empty for none.
    pub unit_scope: String,
    /// A note.
    pub description: String,
    /// Created.
    pub create_time: Micros,
    /// Expires.
    pub expire_time: Option<Micros>,
    /// Revoked.
    pub revoke_time: Option<Micros>,
}

/// What a new token allows (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Who will hold it.
    pub principal: String,
    /// Its role.
    pub role: Role,
    /// Place scope, empty for none.
    pub place_scope: String,
    /// Unit scope, empty for none.
    pub unit_scope: String,
    /// A note.
    pub description: String,
    /// Lifetime; `None` for no expiry.
    pub ttl: Option<Duration>,
}

/// The token store, shared by every service of an installation.
#[derive(Clone)]
pub struct TokenStore {
    db: Db,
    cache: moka::sync::Cache<String, Option<Principal>>,
    clock: Clock,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").field("db", &self.db).finish()
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("mq_{}", hex::encode(bytes))
}

const COLUMNS: &str = "id, principal, role, place_scope, unit_scope, description, create_time, expire_time, revoke_time";

fn record(row: &sqlx::any::AnyRow) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get(2)?;
    Ok(TokenRecord {
        id: row.try_get(0)?,
        principal: row.try_get(1)?,
        role: Role::from_slug(&role).ok_or_else(|| {
            StoreError::Other(sqlx::Error::Decode(format!("unknown role {role}").into()))
        })?,
        place_scope: row.try_get(3)?,
        unit_scope: row.try_get(4)?,
        description: row.try_get(5)?,
        create_time: row.try_get(6)?,
        expire_time: row.try_get(7)?,
        revoke_time: row.try_get(8)?,
    })
}

impl TokenStore {
    /// Opens the store in `db`, creating its table when missing.
    pub async fn open(db: Db) -> Result<Self, sqlx::migrate::MigrateError> {
        db.migrate(&MIGRATIONS).await?;
        Ok(Self {
            db,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            clock: Clock::System,
        })
    }

    /// The database behind it.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The principal a secret stands for; `None` for unknown, revoked or expired tokens.
    pub async fn verify(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        let key = hash(secret);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tokens WHERE secret_hash = $1"
        )))
        .bind(&key)
        .fetch_optional(self.db.pool())
        .await?;
        let now = self.clock.now_micros();
        let principal = match row {
            Some(row) => {
                let r = record(&row)?;
                let active = r.revoke_time.is_none() && r.expire_time.is_none_or(|t| t > now);
                active.then(|| Principal {
                    token_id: r.id,
                    name: r.principal,
                    role: r.role,
                    place_scope: Some(r.place_scope).filter(|s| !s.is_empty()),
                    unit_scope: Some(r.unit_scope).filter(|s| !s.is_empty()),
                })
            }
            None => None,
        };
        self.cache.insert(key, principal.clone());
        Ok(principal)
    }

    /// Creates a token; returns its record and its secret.
    pub async fn create(&self, spec: NewToken) -> Result<(TokenRecord, String), StoreError> {
        self.insert(uuid::Uuid::now_v7().simple().to_string(), spec)
            .await
            .map(|r| r.expect("fresh ids do not collide"))
    }

    async fn insert(
        &self,
        id: String,
        spec: NewToken,
    ) -> Result<Option<(TokenRecord, String)>, StoreError> {
        let secret = new_secret();
        let now = self.clock.now_micros();
        let expire_time = spec.ttl.map(|t| now + t.as_micros() as i64);
        let mut tx = self.db.begin().await?;
        let done = sqlx::query(
            "INSERT INTO tokens (id, secret_hash, principal, role, place_scope, unit_scope, description, create_time, expire_time, revoke_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(hash(&secret))
        .bind(&spec.principal)
        .bind(spec.role.slug())
        .bind(&spec.place_scope)
        .bind(&spec.unit_scope)
        .bind(&spec.description)
        .bind(now)
        .bind(expire_time)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some((
            TokenRecord {
                id,
                principal: spec.principal,
                role: spec.role,
                place_scope: spec.place_scope,
                unit_scope: spec.unit_scope,
                description: spec.description,
                create_time: now,
                expire_time,
                revoke_time: None,
            },
            secret,
        )))
    }

    /// Tokens newest first, `limit` at a time, after the token id `after` (exclusive).
    pub async fn list(
        &self,
        include_inactive: bool,
        limit: i64,
        after: Option<&str>,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let now = self.clock.now_micros();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tokens \
             WHERE ($1 = 1 OR (revoke_time IS NULL AND (expire_time IS NULL OR expire_time > $2))) \
               AND ($3 = '' OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        )))
        .bind(i64::from(include_inactive))
        .bind(now)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Gets one token.
    pub async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tokens WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Revokes a token (a no-op for one already revoked); `None` when there is no such token.
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE tokens SET revoke_time = $2 WHERE id = $1 AND revoke_time IS NULL")
            .bind(id)
            .bind(self.clock.now_micros())
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        // This process forgets at once; others within the cache lifetime.
        self.cache.invalidate_all();
        self.get(id).await
    }

    /// Creates the first city-admin token if it was never created; returns its secret then.
    pub async fn ensure_admin(&self) -> Result<Option<String>, StoreError> {
        let created = self
            .insert(
                BOOTSTRAP_ADMIN_ID.to_string(),
                NewToken {
                    principal: "admin".into(),
                    role: Role::CityAdmin,
                    place_scope: String::new(),
                    unit_scope: String::new(),
                    description: "created on first start".into(),
                    ttl: None,
                },
            )
            .await?;
        Ok(created.map(|(_, secret)| secret))
    }

    /// Issues a token for a service of the suite (`service/<name>`), to call other services'
    /// feeds with. Its secret lives only in the running process, which revokes it on a clean
    /// shutdown; several replicas each hold their own.
    pub async fn issue_service_token(&self, service: &str) -> Result<(String, String), StoreError> {
        let (record, secret) = self
            .create(NewToken {
                principal: format!("service/{service}"),
                role: Role::Service,
                place_scope: String::new(),
                unit_scope: String::new(),
                description: "issued at start-up, revoked at shutdown".into(),
                ttl: None,
            })
            .await?;
        Ok((record.id, secret))
    }
}
