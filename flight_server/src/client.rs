//! A small Flight SQL client: what the demo and the `barecount-flight` CLI use to list
//! published datasets and run SQL over them.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::Criteria;
use futures::TryStreamExt;
use serde::Deserialize;
use tonic::transport::Channel;

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

pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?.connect().await?)
}

/// Every dataset the server publishes, with its receipt.
pub async fn list(url: &str) -> anyhow::Result<Vec<Listing>> {
    let mut client = FlightServiceClient::new(channel(url).await?);
    let mut stream = client.list_flights(Criteria::default()).await?.into_inner();
    let mut out = Vec::new();
    while let Some(info) = stream.try_next().await? {
        out.push(serde_json::from_slice(&info.app_metadata)?);
    }
    Ok(out)
}

/// Runs SQL through Flight SQL (GetFlightInfo, then DoGet on every endpoint).
pub async fn query(url: &str, sql: &str) -> anyhow::Result<(Schema, Vec<RecordBatch>)> {
    let mut client = FlightSqlServiceClient::new(channel(url).await?);
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
