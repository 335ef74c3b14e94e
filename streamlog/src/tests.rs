use std::io::Write;

use super::*;

fn read_all(r: &mut PartitionReader) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut batch = ReadBatch::default();
    while let ReadStatus::Records(_) = r.read(&mut batch, 100).unwrap() {
        for i in 0..batch.records.len() {
            out.push((batch.payload(i).to_vec(), batch.records[i].1));
        }
        batch.clear();
    }
    out
}

fn small() -> WriterOptions {
    WriterOptions {
        partitions: 2,
        segment_bytes: 64,
    }
}

#[test]
fn round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), small()).unwrap();
    for i in 0..50u32 {
        assert_eq!(
            w.append(i % 2, format!("record-{i}").as_bytes()).unwrap(),
            u64::from(i / 2)
        );
    }
    w.flush().unwrap();
    assert!(segments(dir.path(), 0).unwrap().len() > 3);
    let mut r = PartitionReader::open(dir.path(), 1, None).unwrap();
    let got = read_all(&mut r);
    assert_eq!(got.len(), 25);
    for (k, (payload, offset)) in got.iter().enumerate() {
        assert_eq!(*offset, k as u64);
        assert_eq!(payload, format!("record-{}", 2 * k + 1).as_bytes());
    }
    // Resume from a saved position.
    let mut r2 = PartitionReader::open(dir.path(), 0, None).unwrap();
    let mut b = ReadBatch::default();
    r2.read(&mut b, 20).unwrap();
    let pos = r2.position();
    let mut r3 = PartitionReader::open(dir.path(), 0, Some(pos)).unwrap();
    let rest = read_all(&mut r3);
    assert_eq!(rest.first().unwrap().1, pos.offset);
    assert_eq!(rest.last().unwrap().1, 24);
}

#[test]
fn tailing_reader_sees_appends_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), small()).unwrap();
    let mut r = PartitionReader::open(dir.path(), 0, None).unwrap();
    let mut b = ReadBatch::default();
    assert_eq!(r.read(&mut b, 1000).unwrap(), ReadStatus::AtEnd);
    for i in 0..20 {
        w.append(0, format!("x{i}").as_bytes()).unwrap();
        w.flush().unwrap();
        assert_eq!(r.read(&mut b, 1000).unwrap(), ReadStatus::Records(1));
    }
    assert_eq!(b.records.len(), 20);
    assert_eq!(b.records[19].1, 19);
}

#[test]
fn torn_tail_is_not_data_and_is_truncated_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = LogWriter::open(dir.path(), WriterOptions::default()).unwrap();
        w.append(0, b"one").unwrap();
        w.append(0, b"two").unwrap();
        w.sync().unwrap();
    }
    let seg = segment_path(dir.path(), 0, 0);
    // A torn append: a header promising 100 bytes and only 5 of them.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&100u32.to_le_bytes()).unwrap();
    f.write_all(&[0, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);
    let mut r = PartitionReader::open(dir.path(), 0, None).unwrap();
    assert_eq!(read_all(&mut r).len(), 2);
    {
        let mut w = LogWriter::open(dir.path(), WriterOptions::default()).unwrap();
        assert_eq!(w.next_offset(0), Some(2));
        w.append(0, b"three").unwrap();
        w.flush().unwrap();
    }
    let mut r = PartitionReader::open(dir.path(), 0, None).unwrap();
    let got: Vec<_> = read_all(&mut r).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn bad_checksum_with_data_after_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = LogWriter::open(dir.path(), WriterOptions::default()).unwrap();
        for p in [b"aaaa", b"bbbb", b"cccc"] {
            w.append(0, p).unwrap();
        }
    }
    let seg = segment_path(dir.path(), 0, 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[FRAME_HEADER + 4 + FRAME_HEADER] ^= 0xff; // first byte of the 2nd payload
    std::fs::write(&seg, &bytes).unwrap();
    let mut r = PartitionReader::open(dir.path(), 0, None).unwrap();
    let mut b = ReadBatch::default();
    assert_eq!(r.read(&mut b, 1 << 20).unwrap(), ReadStatus::Records(1));
    assert!(matches!(
        r.read(&mut b, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _w = LogWriter::open(dir.path(), WriterOptions::default()).unwrap();
    assert!(matches!(
        LogWriter::open(dir.path(), WriterOptions::default()),
        Err(LogError::Locked(_))
    ));
}

#[test]
fn keyed_appends_follow_the_partitioner() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(
        dir.path(),
        WriterOptions {
            partitions: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let (p, _) = w.append_keyed(b"store-7", b"x").unwrap();
    assert_eq!(p, partition_for_key(b"store-7", 3));
    assert_eq!(partitions(dir.path()).unwrap(), 3);
}

#[test]
fn not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let err = PartitionReader::open(dir.path(), 0, None).err().unwrap();
    assert!(err.to_string().contains("not a usable stream log"), "{err}");
}
