//! The spool's promises: what `append` acknowledged is read back after a restart, a torn tail
//! is cut off, consumers resume where they stored their cursor, and the quota is enforced.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use ccrelay::spool::{Record, Route, Spool, SpoolError, SpoolOptions};

fn options(dir: &std::path::Path) -> SpoolOptions {
    SpoolOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 4096,
        retention: Duration::from_secs(3600),
        max_disk_bytes: 1 << 30,
    }
}

fn record(n: usize) -> Record {
    Record {
        routes: vec![Route {
            sink: "archive".into(),
            rule: "all".into(),
            shape: Default::default(),
        }],
        envelope: Bytes::from(format!(r#"{{"id":"{n}"}}"#)),
        body: Bytes::from(format!("<data>{}</data>", "x".repeat(n % 300))),
    }
}

/// Appends records 0..3 to a fresh spool in one segment, stops it, and adds `garbage` after
/// them, as a crash might; returns the length of the good part.
async fn write_three_then_garbage(dir: &std::path::Path, garbage: &[u8]) -> u64 {
    let spool = Spool::open(SpoolOptions {
        segment_bytes: 1 << 20,
        ..options(dir)
    })
    .unwrap();
    for n in 0..3 {
        spool.append(&record(n)).await.unwrap();
    }
    drop(spool);
    let segment = dir.join("spool").join(format!("{:020}.log", 0));
    let good_len = std::fs::metadata(&segment).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(garbage).unwrap();
    good_len
}

fn read_all(spool: &Spool, from: u64) -> Vec<Record> {
    let mut reader = spool.reader(from);
    let mut records = Vec::new();
    loop {
        let batch = reader.read_batch(100).expect("read");
        if batch.is_empty() {
            return records;
        }
        records.extend(batch.into_iter().map(|entry| entry.record));
    }
}

#[tokio::test]
async fn what_append_acknowledged_is_read_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    let mut offsets = Vec::new();
    for n in 0..200 {
        offsets.push(spool.append(&record(n)).await.unwrap());
    }
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "offsets grow"
    );
    assert_eq!(
        read_all(&spool, 0),
        (0..200).map(record).collect::<Vec<_>>()
    );
    drop(spool);

    let reopened = Spool::open(options(dir.path())).unwrap();
    assert_eq!(
        read_all(&reopened, 0),
        (0..200).map(record).collect::<Vec<_>>()
    );
    let segments = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert!(
        segments > 1,
        "a 4 KiB segment size must have rotated, found {segments} segment"
    );
}

#[tokio::test]
async fn concurrent_appends_all_land_with_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&record(n)).await.unwrap() })
        })
        .collect();
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.push(task.await.unwrap());
    }
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), 64);
    assert_eq!(read_all(&spool, 0).len(), 64);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_on_open_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // A frame cut short by a crash.
    write_three_then_garbage(dir.path(), &[200, 0, 0, 0, 1, 2, 3, 4, 5]).await;

    let spool = Spool::open(options(dir.path())).unwrap();
    spool.append(&record(3)).await.unwrap();
    assert_eq!(read_all(&spool, 0), (0..4).map(record).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_consumer_resumes_from_its_stored_cursor_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    assert_eq!(
        spool.cursor("archive"),
        0,
        "a new consumer starts at the oldest record"
    );
    let mut offsets = Vec::new();
    for n in 0..10 {
        offsets.push(spool.append(&record(n)).await.unwrap());
    }
    spool.store_cursor("archive", offsets[6]).unwrap();
    drop(spool);

    let spool = Spool::open(options(dir.path())).unwrap();
    let cursor = spool.cursor("archive");
    assert_eq!(cursor, offsets[6]);
    assert_eq!(
        read_all(&spool, cursor),
        (6..10).map(record).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_reader_waits_for_records_appended_after_it_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    let mut reader = spool.reader(0);
    assert!(reader.read_batch(10).unwrap().is_empty());
    let writer = spool.clone();
    tokio::spawn(async move { writer.append(&record(1)).await.unwrap() });
    tokio::time::timeout(Duration::from_secs(5), reader.wait_for_records())
        .await
        .expect("the append wakes the reader");
    assert_eq!(reader.read_batch(10).unwrap()[0].record, record(1));
}

#[tokio::test]
async fn past_the_quota_appends_fail_with_full_until_consumers_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(SpoolOptions {
        max_disk_bytes: 8 * 1024,
        retention: Duration::from_secs(3600),
        ..options(dir.path())
    })
    .unwrap();
    let _ = spool.cursor("archive");
    let mut last_offset = 0;
    let full = loop {
        match spool.append(&record(200)).await {
            Ok(offset) => last_offset = offset,
            Err(err) => break err,
        }
    };
    assert!(matches!(full, SpoolError::Full { .. }), "got {full}");

    // Once the consumer is past the sealed segments, the quota lets them go.
    spool.store_cursor("archive", last_offset).unwrap();
    spool.append(&record(200)).await.expect("space was freed");
}

#[tokio::test]
async fn retention_keeps_delivered_segments_until_they_are_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    let mut last = 0;
    for n in 0..100 {
        last = spool.append(&record(n)).await.unwrap();
    }
    spool.store_cursor("archive", last).unwrap();
    assert_eq!(
        spool.compact().unwrap(),
        0,
        "an hour's retention keeps fresh segments"
    );
    drop(spool);

    let spool = Spool::open(SpoolOptions {
        retention: Duration::ZERO,
        ..options(dir.path())
    })
    .unwrap();
    assert!(spool.compact().unwrap() > 0);
    assert!(spool.start() > 0);
    assert_eq!(read_all(&spool, spool.cursor("archive")).len(), 1);
}

#[tokio::test]
async fn a_zero_filled_tail_is_cut_on_open_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    // What delayed allocation can leave after a power loss.
    let good_len = write_three_then_garbage(dir.path(), &[0u8; 64]).await;

    let spool = Spool::open(options(dir.path())).unwrap();
    spool.append(&record(3)).await.unwrap();
    assert_eq!(read_all(&spool, 0), (0..4).map(record).collect::<Vec<_>>());
    let aside = dir
        .path()
        .join("spool")
        .join(format!("{:020}.log.damaged-{good_len}", 0));
    assert_eq!(std::fs::read(aside).unwrap(), vec![0u8; 64]);
}

#[tokio::test]
async fn a_cursor_past_the_recovered_end_is_pulled_back_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(options(dir.path())).unwrap();
    let end = {
        spool.append(&record(1)).await.unwrap();
        spool.durable_end()
    };
    spool.store_cursor("archive", end + 1000).unwrap();
    drop(spool);
    let spool = Spool::open(options(dir.path())).unwrap();
    assert_eq!(spool.cursor("archive"), end);
    let offset = spool.append(&record(2)).await.unwrap();
    assert_eq!(
        read_all(&spool, spool.cursor("archive"))[0],
        record(2),
        "offset {offset} is read"
    );
}
