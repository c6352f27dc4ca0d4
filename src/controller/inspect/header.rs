//! The first bytes of a .blend: the Blender version that saved it, its
//! compression, and whether a given Blender can open it.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::InspectError;

/// Bytes of the (decompressed) file [`read_header`] looks at: the longest
/// header, Blender 5's `BLENDER17-01v0502`.
const HEADER_BYTES: usize = 17;

/// A Blender release as major.minor: `3.4`, `2.79`, `5.2`.
///
/// Ordered by major, then minor, so `2.79 < 3.4 < 4.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlendVersion {
    /// Major version, e.g. 3.
    pub major: u32,
    /// Minor version, e.g. 4 (of 3.4) or 79 (of 2.79).
    pub minor: u32,
}

impl BlendVersion {
    /// Reads the major.minor of a Blender version string such as `3.4.1`,
    /// `4.2.3 LTS` or `2.79b`.
    pub fn parse_blender(version: &str) -> Option<Self> {
        let mut parts = version.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self {
            major,
            minor: minor.parse().ok()?,
        })
    }

    /// The version from a header's number, e.g. 304 (3.4) or 279 (2.79).
    fn from_header_number(number: u32) -> Self {
        Self {
            major: number / 100,
            minor: number % 100,
        }
    }
}

impl fmt::Display for BlendVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How a .blend is compressed on disk. Blender 3.0 and later write zstd,
/// older versions gzip, when "Compress" is ticked on saving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (magic bytes 1f 8b).
    Gzip,
    /// Zstandard (magic bytes 28 b5 2f fd).
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        })
    }
}

/// What a .blend's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlendHeader {
    /// The Blender version that saved the file.
    pub version: BlendVersion,
    /// How the file is compressed.
    pub compression: Compression,
    /// Pointer size of the machine that saved it: 4 or 8.
    pub pointer_size_bytes: u8,
    /// Whether it was saved big-endian (old PowerPC Macs); little otherwise.
    pub big_endian: bool,
}

/// Reads the header of a .blend (or .blend1 backup), decompressing only the
/// first few bytes of a gzip or zstd file.
///
/// Two header layouts exist: `BLENDER-v304` (pointer size `_` 4 or `-` 8,
/// endianness `v` little or `V` big, version 3.4) up to Blender 4.x, and
/// `BLENDER17-01v0502` (header size 17, pointer size, format version 01,
/// endianness, version 5.2) from Blender 5.
pub fn read_header(path: &Path) -> Result<BlendHeader, InspectError> {
    let read_error = |cause| InspectError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut magic = [0_u8; 4];
    let magic_len = read_up_to(&mut file, &mut magic).map_err(read_error)?;
    let magic = &magic[..magic_len];
    let compression = match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    };
    let decompress_error = |err: std::io::Error| InspectError::Decompress {
        path: path.to_path_buf(),
        compression,
        detail: short_error(&err),
    };
    let mut head = [0_u8; HEADER_BYTES];
    let mut stream = magic.chain(file);
    let head_len = match compression {
        Compression::None => read_up_to(&mut stream, &mut head).map_err(read_error)?,
        Compression::Gzip => read_up_to(&mut flate2::read::GzDecoder::new(stream), &mut head)
            .map_err(decompress_error)?,
        Compression::Zstd => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(stream)
                .map_err(|err| decompress_error(std::io::Error::other(err)))?;
            read_up_to(&mut decoder, &mut head).map_err(decompress_error)?
        }
    };
    let head = &head[..head_len];
    let (version, pointer_size_bytes, big_endian) =
        parse_header(head).ok_or_else(|| InspectError::NotBlend {
            path: path.to_path_buf(),
            start: describe_start(head, compression),
        })?;
    Ok(BlendHeader {
        version,
        compression,
        pointer_size_bytes,
        big_endian,
    })
}

/// A decompressor's error in a few words: zstd's nest the whole chain of
/// Debug output into their message.
fn short_error(err: &std::io::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return "it ends too early (truncated)".into();
        }
        cause = current.source();
    }
    let text = err.to_string();
    let short = text.split('(').next().unwrap_or(&text);
    short.trim().trim_end_matches(':').trim().to_string()
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Parses either header layout into (version, pointer size, big-endian).
pub(super) fn parse_header(head: &[u8]) -> Option<(BlendVersion, u8, bool)> {
    fn pointer_size(byte: u8) -> Option<u8> {
        match byte {
            b'_' => Some(4),
            b'-' => Some(8),
            _ => None,
        }
    }
    fn big_endian(byte: u8) -> Option<bool> {
        match byte {
            b'v' => Some(false),
            b'V' => Some(true),
            _ => None,
        }
    }
    fn number(digits: &[u8]) -> Option<u32> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
    let rest = head.strip_prefix(b"BLENDER")?;
    if rest.first().is_some_and(u8::is_ascii_digit) {
        // BLENDER17-01v0502: header size, pointer size, format version,
        // endianness, four-digit version.
        number(rest.get(0..2)?)?;
        let pointer = pointer_size(*rest.get(2)?)?;
        number(rest.get(3..5)?)?;
        let big = big_endian(*rest.get(5)?)?;
        let version = number(rest.get(6..10)?)?;
        Some((BlendVersion::from_header_number(version), pointer, big))
    } else {
        // BLENDER-v304: pointer size, endianness, three-digit version.
        let pointer = pointer_size(*rest.first()?)?;
        let big = big_endian(*rest.get(1)?)?;
        let version = number(rest.get(2..5)?)?;
        Some((BlendVersion::from_header_number(version), pointer, big))
    }
}

/// Says in a few words what a file that is no .blend starts with.
fn describe_start(head: &[u8], compression: Compression) -> String {
    let what = match compression {
        Compression::None => "it",
        Compression::Gzip => "its gzip-compressed content",
        Compression::Zstd => "its zstd-compressed content",
    };
    if head.is_empty() {
        return match compression {
            Compression::None => "it is empty (0 bytes)".into(),
            _ => format!("{what} is empty"),
        };
    }
    let shown = if head.starts_with(b"BLENDER") {
        head
    } else {
        &head[..head.len().min(8)]
    };
    let escaped: String = shown
        .iter()
        .flat_map(|byte| std::ascii::escape_default(*byte))
        .map(char::from)
        .collect();
    if head.starts_with(b"BLENDER") {
        format!("{what} has a header \"{escaped}\" that herd cannot read")
    } else {
        format!("{what} starts with \"{escaped}\"")
    }
}

/// The first Blender that reads the file format of 5.x (the
/// `BLENDER17-01v0502` header): 4.5 LTS was made to open files of the next
/// major version.
const READS_5X_FILES: BlendVersion = BlendVersion { major: 4, minor: 5 };

/// Refuses a file that the Blender of `blender_version` (as Blender prints
/// it, e.g. `3.4.1`) cannot open, going by what Blender really does: a newer
/// minor version of the same major opens (with a warning; callers can use
/// [`is_newer`] to say so), and so do 5.x files in 4.5 and later; any other
/// newer major does not (3.x segfaults on most 4.x files, 4.4 and before
/// cannot read the 5.x format).
pub fn check_compatible(
    file: &Path,
    file_version: BlendVersion,
    blender_version: &str,
) -> Result<(), InspectError> {
    let running = BlendVersion::parse_blender(blender_version)
        .ok_or_else(|| InspectError::BlenderVersion(blender_version.to_string()))?;
    if file_version.major <= running.major || (file_version.major == 5 && running >= READS_5X_FILES)
    {
        return Ok(());
    }
    let why = if file_version.major >= 5 && running < READS_5X_FILES {
        format!(
            "{}.x files use a new file format that only Blender {READS_5X_FILES} and later can read",
            file_version.major
        )
    } else if running.major == 3 && file_version.major == 4 {
        format!(
            "Blender {running} crashes on most {}.x files",
            file_version.major
        )
    } else {
        format!(
            "Blender {running} does not read files of Blender {}.x",
            file_version.major
        )
    };
    Err(InspectError::TooNew {
        path: file.to_path_buf(),
        file_version,
        blender_version: blender_version.to_string(),
        blender_major_minor: running,
        why,
    })
}

/// Whether a file saved by `file` is newer than the `blender` opening it.
pub fn is_newer(file: BlendVersion, blender: BlendVersion) -> bool {
    file > blender
}
