//! `weft keys rotate` and `weft keys list`: the keyring file that signs
//! waitpoint tokens (`weft dev` keeps it in `--data`, `weft server` reads
//! `--signing-keys`). A running server notices a rotation within a second.

use std::path::PathBuf;

use weft_server::keys::{
    read_keyring, rotate_keyring_file, DEV_KEYRING_FILE, ROTATE_GRACE_MS_DEFAULT,
};

/// The keyring commands.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new signing key (creating the file when there is none); the
    /// old key still verifies tokens for `--grace-ms`. Prints the new id.
    Rotate(RotateArgs),
    /// Show the keys of a keyring file (ids and dates, never secrets).
    List(FileArgs),
}

/// Which keyring file.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct FileArgs {
    /// `weft dev`'s data directory (the file is `DIR/signing-keys.json`).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// A keyring file, as `weft server --signing-keys` takes.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl FileArgs {
    fn path(&self) -> Result<PathBuf, String> {
        match (&self.data, &self.file) {
            (Some(dir), None) => Ok(dir.join(DEV_KEYRING_FILE)),
            (None, Some(file)) => Ok(file.clone()),
            _ => Err("name the keyring with --data DIR or --file PATH".into()),
        }
    }
}

/// `weft keys rotate`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    file: FileArgs,
    /// How long the key being replaced still verifies, in ms (default 7 days).
    #[arg(long, default_value_t = ROTATE_GRACE_MS_DEFAULT, value_name = "MS")]
    grace_ms: i64,
}

/// Runs a keys command.
pub async fn run(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Rotate(args) => {
            let path = args.file.path()?;
            let ring = rotate_keyring_file(&path, args.grace_ms).map_err(|e| e.to_string())?;
            crate::say(&ring.signing_key().id);
            Ok(())
        }
        KeysCommand::List(args) => {
            let path = args.path()?;
            let ring = read_keyring(&path).map_err(|e| e.to_string())?;
            crate::say(&format!("{:<16} {:<26} VERIFIES UNTIL", "KEY", "CREATED"));
            for key in ring.keys() {
                let until = key
                    .verify_until_ms
                    .map_or_else(|| "(signing key)".to_owned(), weft_api::time::format_ms);
                crate::say(&format!(
                    "{:<16} {:<26} {until}",
                    key.id,
                    weft_api::time::format_ms(key.created_at_ms)
                ));
            }
            Ok(())
        }
    }
}
