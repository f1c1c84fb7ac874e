//! GoFile, pipe, stdio and fs: producers and consumers, timeouts that lose
//! nothing, big and many files, stdin redirections in a child process,
//! close semantics, bad input.

use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nimgo::GoFile;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nimgo-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// FNV-1a, enough to compare contents.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn pipe_producer_consumer_with_pauses_timeouts_and_eof() {
    nimgo::with_event_loop(|| {
        let (mut reader, mut writer) = nimgo::pipe().unwrap();
        let producer = nimgo::go(move || {
            for i in 0..5u8 {
                writer.write_all(&[b'a' + i; 3]).unwrap();
                nimgo::sleep(Duration::from_millis(20));
            }
            writer.close().unwrap();
        });
        let mut received = Vec::new();
        let mut timeouts = 0;
        loop {
            match reader.read_chunk(Some(Duration::from_millis(5))) {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => received.extend(chunk),
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::TimedOut);
                    timeouts += 1;
                }
            }
        }
        producer.wait();
        assert_eq!(received, b"aaabbbcccdddeee");
        assert!(timeouts > 0);
        // End of file stays end of file.
        assert_eq!(reader.read(&mut [0; 4]).unwrap(), 0);
    });
}

#[test]
fn read_line_over_a_pipe_returns_the_partial_last_line() {
    let (reader, mut writer) = nimgo::pipe().unwrap();
    let producer = nimgo::go(move || {
        writer.write_all(b"one\ntw").unwrap();
        nimgo::sleep(Duration::from_millis(5));
        writer.write_all(b"o\nthree").unwrap();
    });
    let mut reader = BufReader::new(reader);
    let mut lines = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        lines.push(std::mem::take(&mut line));
    }
    producer.wait();
    assert_eq!(lines, ["one\n", "two\n", "three"]);
}

#[test]
fn pipe_end_moves_between_threads() {
    let (mut reader, mut writer) = nimgo::pipe().unwrap();
    writer.write_all(b"ab").unwrap();
    let mut buf = [0; 1];
    reader.read_exact(&mut buf).unwrap();
    let reader = std::thread::spawn(move || {
        nimgo::go_and_wait(move || {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            rest
        })
    });
    writer.write_all(b"cd").unwrap();
    drop(writer);
    assert_eq!(reader.join().unwrap(), b"bcd");
}

#[test]
fn hundred_mib_file_round_trip_with_checksum() {
    let path = scratch("big.bin");
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    let (written, expected) = nimgo::go_and_wait({
        let path = path.clone();
        move || {
            let mut file = GoFile::create(&path).unwrap();
            let mut all = Vec::with_capacity(100 << 20);
            for round in 0..100u8 {
                let mut chunk = block.clone();
                chunk[0] = round;
                file.write_all(&chunk).unwrap();
                all.extend_from_slice(&chunk);
            }
            file.sync_all().unwrap();
            file.close().unwrap();
            (all.len(), checksum(&all))
        }
    });
    assert_eq!(written, 100 << 20);
    let file = GoFile::open(&path).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 100 << 20);
    // Read back in odd-sized chunks through the read-ahead path.
    let mut reader = file;
    let mut back = Vec::new();
    let mut buf = vec![0; 100_003];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(back.len(), 100 << 20);
    assert_eq!(checksum(&back), expected);
    // And whole, in one job.
    assert_eq!(checksum(&nimgo::fs::read(&path).unwrap()), expected);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn many_files_read_concurrently() {
    let paths: Vec<PathBuf> = (0..64)
        .map(|i| {
            let path = scratch(&format!("many-{i}.txt"));
            std::fs::write(&path, format!("file {i}\n").repeat(1000)).unwrap();
            path
        })
        .collect();
    let texts = nimgo::with_event_loop(|| {
        let tasks: Vec<_> = paths
            .iter()
            .cloned()
            .map(|path| {
                nimgo::go(move || {
                    let mut text = String::new();
                    GoFile::open(path)
                        .unwrap()
                        .read_to_string(&mut text)
                        .unwrap();
                    text
                })
            })
            .collect();
        nimgo::wait_all(tasks)
    });
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(*text, format!("file {i}\n").repeat(1000));
    }
    for path in paths {
        nimgo::fs::remove_file(path).unwrap();
    }
}

#[test]
fn seek_and_write_after_read_ahead_use_the_callers_position() {
    let path = scratch("seek.txt");
    std::fs::write(&path, b"0123456789").unwrap();
    let mut file =
        GoFile::with_options(&path, std::fs::OpenOptions::new().read(true).write(true)).unwrap();
    let mut two = [0; 2];
    file.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"01");
    assert_eq!(file.stream_position().unwrap(), 2);
    file.write_all(b"xy").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut all = String::new();
    file.read_to_string(&mut all).unwrap();
    assert_eq!(all, "01xy456789");
    file.set_len(4).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"01xy");
}

#[test]
fn close_semantics() {
    let (mut reader, writer) = nimgo::pipe().unwrap();
    // Closing the only writer gives the reader end of file.
    writer.close().unwrap();
    assert_eq!(reader.read(&mut [0; 8]).unwrap(), 0);
    reader.close().unwrap();
    // Dropping closes too.
    let (mut reader, writer) = nimgo::pipe().unwrap();
    drop(writer);
    assert_eq!(reader.read(&mut [0; 8]).unwrap(), 0);
    // Writing to a pipe whose reader is closed is BrokenPipe.
    let (reader, mut writer) = nimgo::pipe().unwrap();
    reader.close().unwrap();
    assert_eq!(
        writer.write(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    // A closed regular file's data is there.
    let path = scratch("closed.txt");
    let mut file = GoFile::create(&path).unwrap();
    file.write_all(b"kept").unwrap();
    file.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"kept");
}

#[test]
fn bad_input_gives_actionable_errors() {
    let missing = scratch("does-not-exist.txt");
    let error = GoFile::open(&missing).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert!(
        error.to_string().contains(missing.to_str().unwrap()),
        "{error}"
    );

    let dir = scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let error = GoFile::open(&dir).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::IsADirectory, "{error}");
    assert!(error.to_string().contains("a-directory"), "{error}");
    let error = GoFile::create(&dir).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::IsADirectory, "{error}");

    let path = scratch("read-only-handle.txt");
    std::fs::write(&path, b"data").unwrap();
    let mut file = GoFile::open(&path).unwrap();
    let error = file.write(b"nope").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");

    let (mut reader, _writer) = nimgo::pipe().unwrap();
    let error = reader.write(b"x").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
    let error = reader.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        println!("note: running as root, the permission-denied check is skipped");
    } else {
        use std::os::unix::fs::PermissionsExt;
        let locked = scratch("mode-000.txt");
        std::fs::write(&locked, b"secret").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let error = GoFile::open(&locked).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("mode-000.txt"), "{error}");
    }

    let error = nimgo::fs::read_to_string(&missing).unwrap_err();
    assert!(error.to_string().contains("does-not-exist"), "{error}");
    let error = nimgo::fs::rename(&missing, scratch("elsewhere")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

#[test]
fn fs_functions_round_trip() {
    let dir = scratch("fs-tree/a/b");
    nimgo::fs::create_dir_all(&dir).unwrap();
    nimgo::fs::write(dir.join("one.txt"), "one").unwrap();
    assert_eq!(
        nimgo::fs::copy(dir.join("one.txt"), dir.join("two.txt")).unwrap(),
        3
    );
    nimgo::fs::rename(dir.join("two.txt"), dir.join("three.txt")).unwrap();
    let mut names: Vec<_> = nimgo::fs::read_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["one.txt", "three.txt"]);
    assert_eq!(nimgo::fs::metadata(dir.join("three.txt")).unwrap().len(), 3);
    nimgo::fs::remove_file(dir.join("one.txt")).unwrap();
    assert_eq!(
        nimgo::fs::read_to_string(dir.join("three.txt")).unwrap(),
        "one"
    );
}

const CHILD: &str = "NIMGO_STDIN_CHILD";

/// Runs in the child: reads stdin through nimgo and reports what it saw.
#[test]
fn stdin_child_entry() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (bytes, lines, uses_pool) = nimgo::with_event_loop(|| {
        nimgo::go_and_wait(|| {
            let mut stdin = nimgo::stdin().unwrap();
            stdin
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let uses_pool = stdin.uses_pool();
            let mut text = String::new();
            BufReader::new(stdin).read_to_string(&mut text).unwrap();
            (text.len(), text.lines().count(), uses_pool)
        })
    });
    // SAFETY: F_GETFL on fd 0, which the process has open.
    let flags = unsafe { libc::fcntl(std::io::stdin().as_raw_fd(), libc::F_GETFL) };
    let nonblocking = flags & libc::O_NONBLOCK != 0;
    let mut out = nimgo::stdout().unwrap();
    writeln!(
        out,
        "CHILD bytes={bytes} lines={lines} pool={uses_pool} nonblocking={nonblocking}"
    )
    .unwrap();
}

fn run_child(stdin: Stdio, feed: Option<&[u8]>) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdin_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(feed) = feed {
        let mut pipe = child.stdin.take().unwrap();
        for piece in feed.chunks(1000) {
            pipe.write_all(piece).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .find_map(|line| line.find("CHILD ").map(|at| line[at..].to_owned()))
        .unwrap_or_else(|| panic!("no report in {stdout:?}"))
}

#[test]
fn stdin_from_dev_null_pipe_and_file() {
    assert_eq!(
        run_child(Stdio::null(), None),
        "CHILD bytes=0 lines=0 pool=true nonblocking=false"
    );
    let text = "a line of input\n".repeat(5000) + "partial";
    assert_eq!(
        run_child(Stdio::piped(), Some(text.as_bytes())),
        format!(
            "CHILD bytes={} lines=5001 pool=false nonblocking=false",
            text.len()
        )
    );
    let path = scratch("stdin.txt");
    std::fs::write(&path, &text).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    assert_eq!(
        run_child(Stdio::from(file), None),
        format!(
            "CHILD bytes={} lines=5001 pool=true nonblocking=false",
            text.len()
        )
    );
}

#[test]
fn a_pipe_end_moved_to_another_thread_keeps_working() {
    use std::io::{Read, Write};
    let (mut reader, mut writer) = nimgo::pipe().unwrap();
    // First used here, registering with this thread's dispatcher...
    writer.write_all(b"one ").unwrap();
    let mut first = [0u8; 4];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"one ");
    // ...then moved to another thread's coroutine and used there.
    let moved = std::thread::spawn(move || {
        nimgo::go_and_wait(move || {
            let mut rest = String::new();
            reader.read_to_string(&mut rest).unwrap();
            rest
        })
    });
    writer.write_all(b"two").unwrap();
    drop(writer);
    assert_eq!(moved.join().unwrap(), "two");
    // The registration dropped on the other thread was handed back here.
    nimgo::yield_now();
}

#[test]
fn a_pipe_end_can_come_back_to_a_thread_it_used_before() {
    use std::io::{Read, Write};
    let (mut reader, mut writer) = nimgo::pipe().unwrap();
    let mut byte = [0u8; 1];
    writer.write_all(b"a").unwrap();
    reader.read_exact(&mut byte).unwrap();
    let (mut reader, mut writer) = std::thread::spawn(move || {
        writer.write_all(b"b").unwrap();
        reader.read_exact(&mut byte).unwrap();
        (reader, writer)
    })
    .join()
    .unwrap();
    // Back on the first thread, whose epoll still holds the descriptor.
    writer.write_all(b"c").unwrap();
    reader.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"c");
}

#[test]
fn a_buffered_writer_flushes_while_with_timeout_unwinds() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("nimgo-bufwriter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("partial.txt");
    let outcome = nimgo::with_timeout(Duration::from_millis(5), {
        let path = path.clone();
        move || {
            let mut writer = std::io::BufWriter::new(nimgo::GoFile::create(&path).unwrap());
            writer.write_all(b"partial").unwrap();
            nimgo::sleep(Duration::from_secs(3600));
        }
    });
    assert!(outcome.is_err());
    // The flush in the writer's destructor ran to the end.
    assert_eq!(std::fs::read(&path).unwrap(), b"partial");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn copy_and_rename_errors_name_both_paths_once() {
    let dir = std::env::temp_dir().join(format!("nimgo-copy-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.txt");
    let target = dir.join("target.txt");
    let error = nimgo::fs::copy(&missing, &target).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("{} -> {}: ", missing.display(), target.display())),
        "{text}"
    );
    let error = nimgo::fs::rename(&missing, &target).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropping_a_file_gives_back_the_bytes_it_read_ahead() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let dir = std::env::temp_dir().join(format!("nimgo-read-ahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared-offset.txt");
    std::fs::write(&path, b"0123456789").unwrap();
    let mut original = std::fs::File::open(&path).unwrap();
    // A second descriptor for the same open file description, as a child
    // process's redirected stdin shares its parent's.
    let shared = original.as_fd().try_clone_to_owned().unwrap();
    {
        let mut file = nimgo::GoFile::from_fd(shared).unwrap();
        let mut first = [0u8; 3];
        file.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"012");
    }
    let mut rest = String::new();
    original.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest, "3456789",
        "the read-ahead went back to the shared offset"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
