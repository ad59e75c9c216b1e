//! `dialback call-in`: a client calling a company's number, to try return calls on the company's
//! own Asterisk or on the simulator.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// `dialback call-in`: a client calling a company's number, placed on any Asterisk (a real one or
/// the simulator) as the Asterisk 22 transcripts place one: an Originate of `Local/<did>@<context>`
/// whose caller half waits while the other runs the inbound context.
#[derive(clap::Args, Debug, Clone)]
pub struct CallInArgs {
    /// The PBX's AMI address, HOST:PORT (a name or an address).
    #[arg(long, default_value = "127.0.0.1:5038", value_name = "HOST:PORT")]
    pub ami: String,
    /// An AMI user of that PBX allowed to originate (`write = originate` in manager.conf).
    #[arg(long, default_value = "dialback:dialback", value_name = "USER:SECRET")]
    pub user: String,
    /// The number called (the company's).
    #[arg(long, default_value = "74951234567")]
    pub did: String,
    /// Who calls.
    #[arg(long)]
    pub caller: String,
    /// The context the company's number is sent to: dialback's own (what the dialplan dialback
    /// writes calls it), or the PBX's inbound context (e.g. from-trunk) to try its hand-off too.
    #[arg(long, default_value = dialback_domain::dialplan::INBOUND_CONTEXT)]
    pub context: String,
}

pub async fn call_in(args: CallInArgs) -> anyhow::Result<()> {
    let (username, secret) = args.user.split_once(':').context("--user is USER:SECRET")?;
    let (host, port) = args.ami.rsplit_once(':').context("--ami is HOST:PORT")?;
    let port = port.parse().with_context(|| format!("--ami {}: the port is not a number", args.ami))?;
    let config = dialback_ami::ClientConfig {
        label: Arc::from("call-in"),
        endpoint: dialback_ami::transport::Endpoint {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            tls: false,
            ca_pem: None,
            http_prefix: None,
        },
        username: username.to_owned(),
        secret: secrecy::SecretString::from(secret.to_owned()),
        connect_timeout: Duration::from_secs(5),
        action_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(20),
        max_inflight_originates: 1,
        backoff_max: Duration::from_secs(1),
        connector: None,
    };
    let client = dialback_ami::AmiClient::start(config, None);
    client.wait_up(Duration::from_secs(5)).await.context("logging in to the PBX")?;
    let originate = dialback_ami::codec::Outgoing::action("Originate")
        .with("ActionID", dialback_ami::message::new_action_id())
        .with("Channel", format!("Local/{}@{}", args.did, args.context))
        .with("Application", "Wait")
        .with("Data", "60")
        .with("Async", "true")
        .with("CallerID", format!("\"Client\" <{}>", args.caller));
    let reply = client.call(&originate).await.context("the Originate")?;
    client.close().await;
    println!("{} calls {}: {}", args.caller, args.did, reply.get("Message").unwrap_or("queued"));
    Ok(())
}
