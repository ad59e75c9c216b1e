//! What a tap is decided on without asking the database each time: each company's PBX settings
//! (decrypted) and its active couriers and orders. Saves reach every process at once
//! (store/notify.rs); the entries' lifetime bounds how long a missed one stays stale.

use std::time::Duration;

use secrecy::SecretString;

use crate::domain::company::TenantId;
use crate::domain::registry::Order;
use crate::domain::settings::PbxSettings;

/// Active couriers (their phones) and orders as last read: most taps are decided on these, and
/// the attempt's insert checks that they are still what is stored (`DecidedOn`), so an entry may
/// be stale but a decision made on it is never written; it costs a read again.
pub struct RegistryCache {
    couriers: moka::sync::Cache<(TenantId, String), String>,
    orders: moka::sync::Cache<(TenantId, String), Option<Order>>,
}

/// Entries of each kind kept at most (the least used go first): about 20 MB of orders.
const REGISTRY_ENTRIES: u64 = 100_000;

impl Default for RegistryCache {
    fn default() -> Self {
        Self { couriers: moka::sync::Cache::new(REGISTRY_ENTRIES), orders: moka::sync::Cache::new(REGISTRY_ENTRIES) }
    }
}

impl RegistryCache {
    /// The courier's phone and the order (None: it did not exist), when both are cached.
    pub(super) fn get(
        &self,
        tenant: &TenantId,
        courier_id: &str,
        order_id: Option<&str>,
    ) -> Option<(String, Option<Order>)> {
        let phone = self.couriers.get(&(tenant.clone(), courier_id.to_owned()))?;
        let order = match order_id {
            None => None,
            Some(order_id) => self.orders.get(&(tenant.clone(), order_id.to_owned()))?,
        };
        Some((phone, order))
    }

    pub(super) fn put(
        &self,
        tenant: &TenantId,
        courier_id: &str,
        phone: &str,
        order_id: Option<&str>,
        order: Option<&Order>,
    ) {
        self.couriers.insert((tenant.clone(), courier_id.to_owned()), phone.to_owned());
        if let Some(order_id) = order_id {
            self.orders.insert((tenant.clone(), order_id.to_owned()), order.cloned());
        }
    }
}

/// A company's saved settings as a tap reads them.
#[derive(Clone)]
pub struct Saved {
    pub settings: PbxSettings,
    /// The AMI secret, decrypted (empty when the company has no PBX).
    pub secret: SecretString,
    /// Whether the last check found the PBX running the dialplan these settings generate, this
    /// version (`dialplan_watch`): only then is leg 1 rung through its courier context.
    pub runs_our_dialplan: bool,
}

/// Each tenant's [`Saved`] settings, for `SETTINGS_TTL`.
pub struct SettingsCache(moka::sync::Cache<TenantId, Saved>);

impl SettingsCache {
    /// Entries live `ttl` at most (see `DbConfig::cache_ttl_s`).
    pub fn new(ttl: Duration) -> Self {
        Self(moka::sync::Cache::builder().max_capacity(100_000).time_to_live(ttl).build())
    }

    pub(super) fn get(&self, tenant: &TenantId) -> Option<Saved> {
        self.0.get(tenant)
    }

    pub(super) fn put(&self, tenant: &TenantId, saved: &Saved) {
        self.0.insert(tenant.clone(), saved.clone());
    }

    /// This process checked the company's dialplan: taps use the result at once.
    pub(super) fn dialplan_checked(&self, tenant: &TenantId, current: bool) {
        if let Some(mut saved) = self.0.get(tenant) {
            saved.runs_our_dialplan = current;
            self.0.insert(tenant.clone(), saved);
        }
    }

    /// The tenant saved new settings.
    pub fn invalidate(&self, tenant: &TenantId) {
        self.0.invalidate(tenant);
    }

    /// Saves may have been missed (the change listener reconnected).
    pub fn invalidate_all(&self) {
        self.0.invalidate_all();
    }
}
