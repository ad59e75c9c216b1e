//! What every handler shares: the configuration, the database pool and the services.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Verifier;
use crate::callbacks::CallbackService;
use crate::cluster::Cluster;
use crate::companies::Companies;
use crate::config::Config;
use crate::dialplan_watch::DialplanWatch;
use crate::recordings::Recordings;
use crate::return_calls::ReturnCalls;
use crate::webhooks::Webhooks;

pub struct AppState {
    pub config: Arc<Config>,
    pub db: deadpool_postgres::Pool,
    pub metrics: PrometheusHandle,
    pub verifier: Arc<Verifier>,
    pub companies: Arc<Companies>,
    /// This process among the others, its AMI sessions, the event bus, the limits.
    pub cluster: Arc<Cluster>,
    pub callbacks: Arc<CallbackService>,
    pub recordings: Arc<Recordings>,
    pub webhooks: Webhooks,
    pub return_calls: ReturnCalls,
    pub dialplan_watch: Arc<DialplanWatch>,
    /// How the PBX reaches the FastAGI server (`host:port`), when one is served.
    pub agi_address: Option<String>,
}
