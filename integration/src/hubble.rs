//! A small Hubble Observer client for tests and the demo: connect over the agent's unix
//! socket (or TCP) and collect GetFlows responses with a deadline.

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use lumen_api::{
    flow::Flow,
    observer::{
        get_flows_response::ResponseTypes, observer_client::ObserverClient, GetFlowsRequest,
        GetFlowsResponse,
    },
};
use std::{path::Path, time::Duration};
use tonic::transport::{Channel, Endpoint, Uri};

/// A connected client.
pub type Client = ObserverClient<Channel>;

/// Connects to an Observer on a unix socket.
pub async fn connect_unix(path: &Path) -> Result<Client> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    let channel = Endpoint::try_from("http://[::1]:4244")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {shown}"))?;
    Ok(ObserverClient::new(channel))
}

/// Connects to an Observer over TCP (`host:port`).
pub async fn connect_tcp(addr: &str) -> Result<Client> {
    let channel = Endpoint::try_from(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(ObserverClient::new(channel))
}

/// Runs GetFlows and collects responses until the stream ends, `max` responses arrived, or
/// `deadline` passed (whichever first).
pub async fn collect(
    client: &mut Client,
    req: GetFlowsRequest,
    max: usize,
    deadline: Duration,
) -> Result<Vec<GetFlowsResponse>> {
    let mut stream = client.get_flows(req).await?.into_inner();
    let mut out = vec![];
    let end = tokio::time::Instant::now() + deadline;
    while out.len() < max {
        match tokio::time::timeout_at(end, stream.message()).await {
            Ok(Ok(Some(r))) => out.push(r),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => return Err(status.into()),
        }
    }
    Ok(out)
}

/// The flows among responses.
pub fn flows(responses: &[GetFlowsResponse]) -> Vec<Flow> {
    responses
        .iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// Every loss report in the server's ring (no flows): a filter that matches no flow lets
/// only loss reports through.
pub async fn lost_events(client: &mut Client) -> Result<Vec<lumen_api::flow::LostEvent>> {
    let req = GetFlowsRequest {
        whitelist: vec![lumen_api::flow::FlowFilter {
            destination_port: vec!["1".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let resps = collect(client, req, usize::MAX, Duration::from_secs(10)).await?;
    resps
        .into_iter()
        .map(|r| match r.response_types {
            Some(ResponseTypes::LostEvents(l)) => Ok(l),
            other => anyhow::bail!("expected only loss reports, got {other:?}"),
        })
        .collect()
}
