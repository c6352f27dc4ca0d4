//! Starting the node at login. On Linux (and other XDG desktops) that is a
//! desktop entry in the user's autostart folder,
//! `$XDG_CONFIG_HOME/autostart/herd-node.desktop` (`~/.config/autostart/`
//! without the variable), which runs `herd node --minimised`. The node
//! window's "Start at login" box and `herd node --autostart on|off` write
//! and remove it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The autostart entry's file name.
pub const FILE_NAME: &str = "herd-node.desktop";

/// Why the autostart entry could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("cannot find the autostart folder: set HOME or XDG_CONFIG_HOME")]
    NoConfigDir,
    /// herd's own executable could not be found, so the entry could not
    /// name it.
    #[error("cannot find herd's own executable for the autostart entry: {0}")]
    NoExecutable(std::io::Error),
    /// Writing or removing the file failed.
    #[error("cannot change the autostart entry {path}: {source}")]
    Io {
        /// The entry.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The autostart folder: `$XDG_CONFIG_HOME/autostart` when the variable
/// holds an absolute path (the XDG rule), else `$HOME/.config/autostart`.
pub fn autostart_dir(xdg_config_home: Option<OsString>, home: Option<PathBuf>) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| home.map(|home| home.join(".config")))?;
    Some(config.join("autostart"))
}

/// This user's node autostart entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autostart {
    /// The entry's file.
    pub file: PathBuf,
    /// The herd executable it runs.
    pub exe: PathBuf,
}

impl Autostart {
    /// The entry of this user (from the environment), running this
    /// executable.
    pub fn user() -> Result<Self, AutostartError> {
        let dir = autostart_dir(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME").map(PathBuf::from),
        )
        .ok_or(AutostartError::NoConfigDir)?;
        let exe = std::env::current_exe().map_err(AutostartError::NoExecutable)?;
        Ok(Self::at(&dir, &exe))
    }

    /// The entry in the autostart folder `dir`, running `exe`.
    pub fn at(dir: &Path, exe: &Path) -> Self {
        Self {
            file: dir.join(FILE_NAME),
            exe: exe.to_path_buf(),
        }
    }

    /// Whether the node starts at login.
    pub fn enabled(&self) -> bool {
        self.file.is_file()
    }

    /// Writes the entry (`enabled`) or removes it; both are idempotent.
    pub fn set(&self, enabled: bool) -> Result<(), AutostartError> {
        let io = |source| AutostartError::Io {
            path: self.file.clone(),
            source,
        };
        if !enabled {
            return match std::fs::remove_file(&self.file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io(err)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&self.file, self.entry()).map_err(io)
    }

    /// The desktop entry's text.
    pub fn entry(&self) -> String {
        format!(
            "[Desktop Entry]\n\
             Type=Application\n\
             Name=herd render node\n\
             Comment=Render Blender frames for the farm on this network\n\
             Exec={} node --minimised\n\
             Icon=herd\n\
             Terminal=false\n\
             X-GNOME-Autostart-enabled=true\n",
            exec_quote(&self.exe.to_string_lossy())
        )
    }
}

/// `arg` as one argument of a desktop entry's `Exec` key: quoted when it
/// holds anything but plain characters, with `"`, `` ` ``, `$` and `\`
/// escaped inside the quotes (Desktop Entry Specification, "The Exec key"),
/// and each backslash doubled again for the string value's own escaping.
fn exec_quote(arg: &str) -> String {
    let plain = arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-_.+,:@".contains(c));
    if plain {
        return arg.to_string();
    }
    let mut quoted = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' | '`' | '$' => {
                quoted.push_str("\\\\");
                quoted.push(c);
            }
            '\\' => quoted.push_str("\\\\\\\\"),
            '%' => quoted.push_str("%%"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_follows_xdg_config_home_and_falls_back_to_home() {
        assert_eq!(
            autostart_dir(Some("/x/conf".into()), Some("/home/a".into())),
            Some(PathBuf::from("/x/conf/autostart"))
        );
        // A relative XDG_CONFIG_HOME is invalid and ignored.
        assert_eq!(
            autostart_dir(Some("conf".into()), Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.config/autostart"))
        );
        assert_eq!(autostart_dir(None, None), None);
    }

    #[test]
    fn the_entry_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let autostart = Autostart::at(&dir.path().join("autostart"), Path::new("/usr/bin/herd"));
        assert!(!autostart.enabled());
        autostart.set(false).unwrap();
        autostart.set(true).unwrap();
        assert!(autostart.enabled());
        let text = std::fs::read_to_string(dir.path().join("autostart/herd-node.desktop")).unwrap();
        assert!(text.starts_with("[Desktop Entry]\n"));
        assert!(text.contains("\nExec=/usr/bin/herd node --minimised\n"));
        autostart.set(false).unwrap();
        assert!(!autostart.enabled());
        assert!(!dir.path().join("autostart/herd-node.desktop").exists());
    }

    #[test]
    fn an_executable_with_spaces_is_quoted() {
        assert_eq!(
            exec_quote("/opt/my apps/herd"),
            "\"/opt/my apps/herd\"".to_string()
        );
        assert_eq!(exec_quote("/a/$b"), "\"/a/\\\\$b\"".to_string());
    }
}
