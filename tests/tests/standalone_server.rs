//! The `barecount-flight` binary that `make test` starts (not an in-process server) serves what
//! is published in its database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use barecount_flight::client::{self, Auth};
use barecount_tests::{api_token, base_url, connect, standalone_flight_url};
use rand::Rng;

#[tokio::test]
async fn standalone_binary_serves_published_data() {
    let pg = connect(&base_url()).await;
    let name = format!("standalone_{:08x}", rand::rng().random::<u32>());
    pg.query(
        "SELECT * FROM barecount.publish($1, 'SELECT g::bigint AS n FROM generate_series(1, 1234) g')",
        &[&name],
    )
    .await
    .unwrap();
    let url = standalone_flight_url();
    let auth = Auth::Token(api_token(&pg, "default", &["read"]).await);
    let listings = client::list(&url, &auth).await.unwrap();
    assert!(listings
        .iter()
        .any(|l| l.dataset == name && l.row_count == 1234));
    let (_, batches) = client::query(&url, &auth, &format!("SELECT sum(n) AS s FROM {name}"))
        .await
        .unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        1234 * 1235 / 2
    );
}
