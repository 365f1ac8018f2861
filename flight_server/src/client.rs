//! A small Flight SQL client: what the demo, the `barecount-flight` CLI and the tests use to
//! authenticate, list published datasets, run SQL over them and put rows for ingest.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::Criteria;
use futures::TryStreamExt;
use serde::Deserialize;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How a client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A BareCount API token (`barecount.token_create`) or a session token.
    Token(String),
    /// A login role's password, exchanged for a session token by the handshake.
    Password { user: String, password: String },
}

/// One published dataset as ListFlights describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Listing {
    pub dataset: String,
    pub version: i32,
    pub row_count: i64,
    pub content_hash: String,
    pub ledger_seq: i64,
    pub ledger_hash: String,
}

/// A channel to `url`. For `https://` URLs the server's certificate must chain to the CA in
/// the PEM file named by `BARECOUNT_FLIGHT_CA`, if set.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(url.to_owned())?;
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = std::env::var_os("BARECOUNT_FLIGHT_CA") {
            let pem = std::fs::read(&ca).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read BARECOUNT_FLIGHT_CA {}: {e}",
                    ca.to_string_lossy()
                )
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect().await?)
}

/// A Flight SQL client that has authenticated.
pub async fn sql_client(url: &str, auth: &Auth) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
    let mut client = FlightSqlServiceClient::new(channel(url).await?);
    match auth {
        Auth::Token(t) => client.set_token(t.clone()),
        Auth::Password { user, password } => {
            client.handshake(user, password).await?;
        }
    }
    Ok(client)
}

/// The bearer token for `auth`: the token itself, or a session token from a handshake.
pub async fn bearer(url: &str, auth: &Auth) -> anyhow::Result<String> {
    match auth {
        Auth::Token(t) => Ok(t.clone()),
        Auth::Password { user, password } => {
            let mut client = FlightSqlServiceClient::new(channel(url).await?);
            let payload = client.handshake(user, password).await?;
            Ok(String::from_utf8(payload.to_vec())?)
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerInterceptor(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type PlainClient = FlightServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// A plain Flight client (ListFlights, path descriptors, actions) that sends `token`.
pub async fn plain_client(url: &str, token: &str) -> anyhow::Result<PlainClient> {
    let value = MetadataValue::try_from(format!("Bearer {token}"))?;
    Ok(FlightServiceClient::with_interceptor(
        channel(url).await?,
        BearerInterceptor(value),
    ))
}

/// Every dataset the caller's tenant has published, with its receipt.
pub async fn list(url: &str, auth: &Auth) -> anyhow::Result<Vec<Listing>> {
    let mut client = plain_client(url, &bearer(url, auth).await?).await?;
    let mut stream = client.list_flights(Criteria::default()).await?.into_inner();
    let mut out = Vec::new();
    while let Some(info) = stream.try_next().await? {
        out.push(serde_json::from_slice(&info.app_metadata)?);
    }
    Ok(out)
}

/// Runs SQL through Flight SQL (GetFlightInfo, then DoGet on every endpoint).
pub async fn query(
    url: &str,
    auth: &Auth,
    sql: &str,
) -> anyhow::Result<(Schema, Vec<RecordBatch>)> {
    let mut client = sql_client(url, auth).await?;
    let info = client.execute(sql.to_owned(), None).await?;
    let schema = info.clone().try_decode_schema()?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow::anyhow!("endpoint without ticket"))?;
        let stream = client.do_get(ticket).await?;
        let mut got: Vec<RecordBatch> = stream.try_collect().await?;
        batches.append(&mut got);
    }
    Ok((schema, batches))
}

/// Runs the `export` action; `progress` sees (rows written, total rows if known) as it goes.
pub async fn export(
    url: &str,
    auth: &Auth,
    request: &crate::export::ExportRequest,
    mut progress: impl FnMut(u64, Option<u64>),
) -> anyhow::Result<crate::export::ExportReceipt> {
    use crate::export::ExportMessage;
    let mut client = plain_client(url, &bearer(url, auth).await?).await?;
    let action = arrow_flight::Action::new(crate::export::ACTION, serde_json::to_vec(request)?);
    let mut stream = client.do_action(action).await?.into_inner();
    while let Some(r) = stream.try_next().await? {
        match serde_json::from_slice::<ExportMessage>(&r.body)? {
            ExportMessage::Progress { rows, total_rows } => progress(rows, total_rows),
            ExportMessage::Done(receipt) => return Ok(receipt),
        }
    }
    anyhow::bail!("the export ended without a receipt")
}

/// Puts record batches for ingest into `dataset` (a plain Flight `DoPut` with the path
/// descriptor `[dataset]`, or `[dataset, key]` with an idempotency key); the server's answer:
/// `{"dataset", "batch_id", "rows", "accepted", "quarantined", "ledger_seq", "already_landed"}`.
pub async fn put(
    url: &str,
    auth: &Auth,
    dataset: &str,
    key: Option<&str>,
    batches: Vec<RecordBatch>,
) -> anyhow::Result<serde_json::Value> {
    let token = bearer(url, auth).await?;
    let mut client = plain_client(url, &token).await?;
    let mut path = vec![dataset.to_owned()];
    path.extend(key.map(str::to_owned));
    // encoded in full first: an encoding error must fail the put, never cut it short
    let data: Vec<arrow_flight::FlightData> = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_path(path)))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await?;
    let mut results = client
        .do_put(futures::stream::iter(data))
        .await?
        .into_inner();
    let first = results
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the server answered the put with no result"))?;
    Ok(serde_json::from_slice(&first.app_metadata)?)
}
