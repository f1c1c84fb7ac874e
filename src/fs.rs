//! `std::fs` functions that run on the blocking pool, so a coroutine parks
//! instead of blocking its thread. Errors name the path involved.
//!
//! ```
//! let dir = std::env::temp_dir().join("nimgo-fs-doc");
//! nimgo::fs::create_dir_all(&dir)?;
//! nimgo::fs::write(dir.join("a.txt"), "alpha")?;
//! assert_eq!(nimgo::fs::read_to_string(dir.join("a.txt"))?, "alpha");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{self, DirEntry, Metadata};
use std::io;
use std::path::Path;

use crate::blocking;

fn named(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Runs a two-path operation on the pool; an error names both paths once
/// (`from -> to: ...`).
fn on_pool_two<T: Send + 'static>(
    from: &Path,
    to: &Path,
    operation: impl FnOnce(&Path, &Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    blocking::run_io(move || {
        operation(&from, &to).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("{} -> {}: {error}", from.display(), to.display()),
            )
        })
    })
}

fn on_pool<T: Send + 'static>(
    path: &Path,
    operation: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = path.to_path_buf();
    blocking::run_io(move || operation(&path).map_err(|error| named(error, &path)))
}

/// Reads a whole file (`std::fs::read`).
///
/// ```
/// let error = nimgo::fs::read("/no/such/file").unwrap_err();
/// assert!(error.to_string().starts_with("/no/such/file: "));
/// ```
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    on_pool(path.as_ref(), |path| fs::read(path))
}

/// Reads a whole file as UTF-8 (`std::fs::read_to_string`).
///
/// ```
/// # let path = std::env::temp_dir().join("nimgo-fs-rts.txt");
/// nimgo::fs::write(&path, "text")?;
/// assert_eq!(nimgo::fs::read_to_string(&path)?, "text");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    on_pool(path.as_ref(), |path| fs::read_to_string(path))
}

/// Writes a whole file, creating or truncating it (`std::fs::write`). The
/// bytes are copied to the pool job.
///
/// ```
/// # let path = std::env::temp_dir().join("nimgo-fs-write.txt");
/// nimgo::fs::write(&path, [1u8, 2, 3])?;
/// assert_eq!(nimgo::fs::read(&path)?, [1, 2, 3]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let contents = contents.as_ref().to_vec();
    on_pool(path.as_ref(), move |path| fs::write(path, contents))
}

/// Copies a file's contents and permissions (`std::fs::copy`); returns the
/// bytes copied.
///
/// ```
/// # let from = std::env::temp_dir().join("nimgo-fs-copy-a.txt");
/// # let to = std::env::temp_dir().join("nimgo-fs-copy-b.txt");
/// nimgo::fs::write(&from, "xy")?;
/// assert_eq!(nimgo::fs::copy(&from, &to)?, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    on_pool_two(from.as_ref(), to.as_ref(), |from, to| fs::copy(from, to))
}

/// A path's metadata, following symbolic links (`std::fs::metadata`).
///
/// ```
/// assert!(nimgo::fs::metadata("/")?.is_dir());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    on_pool(path.as_ref(), |path| fs::metadata(path))
}

/// The entries of a directory, read whole on the pool (`std::fs::read_dir`,
/// collected).
///
/// ```
/// let entries = nimgo::fs::read_dir("/")?;
/// assert!(entries.iter().any(|entry| entry.file_name() == "tmp"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_dir(path: impl AsRef<Path>) -> io::Result<Vec<DirEntry>> {
    on_pool(path.as_ref(), |path| fs::read_dir(path)?.collect())
}

/// Creates a directory and its missing parents (`std::fs::create_dir_all`).
///
/// ```
/// # let dir = std::env::temp_dir().join("nimgo-fs-mkdir/a/b");
/// nimgo::fs::create_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    on_pool(path.as_ref(), |path| fs::create_dir_all(path))
}

/// Removes a file (`std::fs::remove_file`).
///
/// ```
/// # let path = std::env::temp_dir().join("nimgo-fs-remove.txt");
/// nimgo::fs::write(&path, "")?;
/// nimgo::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    on_pool(path.as_ref(), |path| fs::remove_file(path))
}

/// Renames a file or directory (`std::fs::rename`).
///
/// ```
/// # let from = std::env::temp_dir().join("nimgo-fs-rename-a.txt");
/// # let to = std::env::temp_dir().join("nimgo-fs-rename-b.txt");
/// nimgo::fs::write(&from, "")?;
/// nimgo::fs::rename(&from, &to)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    on_pool_two(from.as_ref(), to.as_ref(), |from, to| fs::rename(from, to))
}
