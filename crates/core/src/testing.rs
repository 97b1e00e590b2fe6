//! Builders for test archives, including the hostile ones that
//! `tar::Builder` itself refuses to write (absolute paths, `..`, escaping
//! links). Compiled only for tests and for crates that enable the `testing`
//! feature, never into a shipped binary.

use std::io::Write;

/// Writes tar entries byte for byte as asked, hostile or not.
#[derive(Default)]
pub struct TarBuilder {
    builder: Option<tar::Builder<Vec<u8>>>,
}

fn set_bytes(field: &mut [u8], value: &[u8]) {
    assert!(
        value.len() < field.len(),
        "test path too long for a ustar field"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

impl TarBuilder {
    pub fn new() -> Self {
        Self {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn append(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
        mode: u32,
    ) {
        let mut header = tar::Header::new_old();
        set_bytes(&mut header.as_old_mut().name, path.as_bytes());
        if let Some(link) = link {
            set_bytes(&mut header.as_old_mut().linkname, link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        self.builder
            .as_mut()
            .expect("finished")
            .append(&header, data)
            .expect("append to memory");
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.append(path, tar::EntryType::Regular, None, data, 0o644);
        self
    }

    pub fn executable(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.append(path, tar::EntryType::Regular, None, data, 0o755);
        self
    }

    /// A file entry with any mode (setuid bits included).
    pub fn file_with_mode(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.append(path, tar::EntryType::Regular, None, data, mode);
        self
    }

    /// Same as [`file`](Self::file); the name says the path is hostile.
    pub fn raw_file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file(path, data)
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.append(path, tar::EntryType::Directory, None, b"", 0o755);
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.append(path, tar::EntryType::Symlink, Some(target), b"", 0o777);
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.append(path, tar::EntryType::Link, Some(target), b"", 0o644);
        self
    }

    pub fn special(&mut self, path: &str, kind: tar::EntryType) -> &mut Self {
        self.append(path, kind, None, b"", 0o644);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.builder
            .take()
            .expect("finished once")
            .into_inner()
            .expect("tar to memory")
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

pub fn zstd_compress(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).expect("zstd to memory")
}

/// A small valid app archive (gzip): a Procfile with a web type and a file.
pub fn app_archive(web: &str) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("Procfile", format!("web: {web}\n").as_bytes());
    t.file("app.py", b"print('hello')\n");
    gzip(&t.finish())
}
