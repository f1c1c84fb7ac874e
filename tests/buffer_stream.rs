//! GoBufferStream: producer/consumer with pauses, chunked reads, end of
//! stream, timeouts that lose nothing, threads, broken pipe, bounded mode.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::time::Duration;

use nimgo::GoBufferStream;

#[test]
fn producer_consumer_with_pauses_and_timeouts_loses_nothing() {
    nimgo::with_event_loop(|| {
        let (mut reader, mut writer) = GoBufferStream::new();
        let producer = nimgo::go(move || {
            for i in 0..5u8 {
                writer.write_all(&[b'a' + i; 3]).unwrap();
                nimgo::sleep(Duration::from_millis(20));
            }
        });
        let mut received = Vec::new();
        let mut timeouts = 0;
        loop {
            match reader.read_chunk(2, Some(Duration::from_millis(5))) {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => {
                    assert!(chunk.len() <= 2);
                    received.extend(chunk);
                }
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::TimedOut);
                    timeouts += 1;
                }
            }
        }
        producer.wait();
        assert_eq!(received, b"aaabbbcccdddeee");
        assert!(timeouts > 0, "the pauses should have produced timeouts");
    });
}

#[test]
fn read_line_returns_partial_last_line_at_eof() {
    let (reader, mut writer) = GoBufferStream::new();
    writer.write_all(b"one\ntwo").unwrap();
    drop(writer);
    let lines: Vec<String> = BufReader::new(reader).lines().map(Result::unwrap).collect();
    assert_eq!(lines, ["one", "two"]);
}

#[test]
fn works_between_threads() {
    let (mut reader, mut writer) = GoBufferStream::with_capacity(1024);
    let producer = std::thread::spawn(move || {
        for i in 0..1000u32 {
            writer.write_all(&i.to_le_bytes()).unwrap();
        }
    });
    let mut all = Vec::new();
    reader.read_to_end(&mut all).unwrap();
    producer.join().unwrap();
    let expected: Vec<u8> = (0..1000u32).flat_map(u32::to_le_bytes).collect();
    assert_eq!(all, expected);
}

#[test]
fn writing_after_the_reader_is_gone_is_broken_pipe() {
    let (reader, mut writer) = GoBufferStream::with_capacity(2);
    writer.write_all(b"ab").unwrap();
    // A writer parked on a full stream is woken by the reader's drop.
    let blocked = nimgo::go(move || writer.write(b"c"));
    nimgo::yield_now();
    drop(reader);
    assert_eq!(blocked.wait().unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[test]
fn cancelled_reader_leaves_the_stream_usable() {
    nimgo::with_event_loop(|| {
        let (reader, mut writer) = GoBufferStream::new();
        let reader = std::rc::Rc::new(std::cell::RefCell::new(reader));
        let parked = {
            let reader = reader.clone();
            nimgo::go(move || reader.borrow_mut().read(&mut [0; 4]).map(|_| ()))
        };
        nimgo::yield_now();
        parked.cancel();
        assert!(parked.join().unwrap_err().is_cancelled());
        writer.write_all(b"ok").unwrap();
        let mut buf = [0; 4];
        assert_eq!(reader.borrow_mut().read(&mut buf).unwrap(), 2);
    });
}
