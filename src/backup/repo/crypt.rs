//! Encryption of the repository with age (X25519).
//!
//! With `REPO_RECIPIENTS` set, every object and every manifest is an age file that the
//! standard `age` CLI decrypts with the matching identity. The machine taking backups needs
//! only the public keys:
//! - **objects** (the store's files) are encrypted to the recipients only: restoring them
//!   needs `REPO_IDENTITY_FILE`;
//! - **manifests** are encrypted to the recipients and to this machine's own key, so that the
//!   machine can list, prune and verify what it wrote without holding the recipients'
//!   identities. A manifest names files and checksums, never their contents.
//!
//! Object names must not reveal contents (a plain SHA-256 would let anyone holding a file
//! check whether the repository has it), so an encrypted object is named by a keyed hash of
//! the content's SHA-256, under a name key that lives only on this machine and inside the
//! encrypted manifests. The recipients take part in the name: after a change of recipients
//! the files are stored again, encrypted to the new ones, and every backup stays readable
//! by the keys in force when it was taken.
//!
//! The machine's key and name key are kept in `BACKUP_DIR/repo-key.json` (mode 0600). A new
//! machine given `REPO_IDENTITY_FILE` adopts the name key of the newest backup it can read,
//! so deduplication carries on across a move to new hardware.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use age::secrecy::ExposeSecret;
use age::x25519;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Error;

/// The first bytes of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// Largest identity or key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// Most recipients: each adds about 100 bytes to every age file's header.
pub const MAX_RECIPIENTS: usize = 64;
/// Name of the machine's key file in BACKUP_DIR.
pub const KEY_FILE: &str = "repo-key.json";

/// What encryption is configured.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// REPO_RECIPIENTS, checked: `age1…` X25519 public keys. Empty: no encryption.
    pub recipients: Vec<String>,
    /// REPO_IDENTITY_FILE: age identities (`AGE-SECRET-KEY-1…`) to read encrypted backups.
    pub identity_file: Option<PathBuf>,
    /// Where this machine's key lives (`BACKUP_DIR/repo-key.json`); `None`: a machine that
    /// only reads (a fresh machine's `restore --from`).
    pub key_file: Option<PathBuf>,
}

/// Parses REPO_RECIPIENTS: public keys separated by commas or whitespace.
pub fn parse_recipients(raw: &str) -> Result<Vec<String>, String> {
    if looks_secret(raw) {
        return Err("REPO_RECIPIENTS holds a secret key (AGE-SECRET-KEY-…); give the public key instead \
                    (`age-keygen -y KEYFILE` prints it), and keep the secret key off this machine"
            .into());
    }
    let mut keys = Vec::new();
    for key in raw.split(|c: char| c == ',' || c.is_whitespace()).filter(|k| !k.is_empty()) {
        x25519::Recipient::from_str(key).map_err(|_| {
            format!(
                "REPO_RECIPIENTS: {} is not an age X25519 public key (age1…, as `age-keygen -y KEYFILE` prints)",
                crate::untrusted::quote(key.as_bytes())
            )
        })?;
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_owned());
        }
    }
    if keys.len() > MAX_RECIPIENTS {
        return Err(format!("REPO_RECIPIENTS names {} keys; at most {MAX_RECIPIENTS}", keys.len()));
    }
    if keys.is_empty() && !raw.is_empty() {
        return Err(
            "REPO_RECIPIENTS is set but names no key: give age public keys (age1…), or unset it".into()
        );
    }
    Ok(keys)
}

/// This machine's key: it reads the manifests the machine wrote, and names objects.
struct MachineKey {
    identity: x25519::Identity,
    name_key: [u8; 32],
}

/// `repo-key.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyFile {
    format_version: u32,
    identity: String,
    name_key: String,
}

/// The repository's encryption, opened.
pub struct Crypt {
    recipients: Vec<x25519::Recipient>,
    /// The recipients, sorted, as they enter object names.
    fingerprint: String,
    identities: Vec<x25519::Identity>,
    key_file: Option<PathBuf>,
    machine: Mutex<Option<Arc<MachineKey>>>,
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypt")
            .field("recipients", &self.recipients.len())
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl Crypt {
    /// Opens the configured encryption: reads the identity file and this machine's key file
    /// when there is one. Nothing is created yet.
    pub fn open(settings: &Settings) -> Result<Crypt, Error> {
        let recipients = settings
            .recipients
            .iter()
            .map(|k| {
                x25519::Recipient::from_str(k).map_err(|_| Error::Config(format!("REPO_RECIPIENTS: {k}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sorted = settings.recipients.clone();
        sorted.sort();
        let identities = match &settings.identity_file {
            Some(path) => read_identities(path)?,
            None => Vec::new(),
        };
        let machine = match &settings.key_file {
            Some(path) => read_key_file(path)?.map(Arc::new),
            None => None,
        };
        Ok(Crypt {
            recipients,
            fingerprint: sorted.join(","),
            identities,
            key_file: settings.key_file.clone(),
            machine: Mutex::new(machine),
        })
    }

    /// Whether what is written is encrypted.
    pub fn encrypting(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Whether it holds an identity that may read objects.
    pub fn can_read_objects(&self) -> bool {
        !self.identities.is_empty()
    }

    /// The name key objects are named with: this machine's, created on first use. `adopt`
    /// offers the name key of an existing backup for a machine that has none yet.
    pub fn name_key(&self, adopt: impl FnOnce() -> Option<[u8; 32]>) -> Result<[u8; 32], Error> {
        Ok(self.machine(adopt)?.name_key)
    }

    fn machine(&self, adopt: impl FnOnce() -> Option<[u8; 32]>) -> Result<Arc<MachineKey>, Error> {
        if let Some(key) = self.machine.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(key.clone());
        }
        let path = self.key_file.as_ref().ok_or_else(|| {
            Error::Config("this command only reads the repository; it holds no key to write with".into())
        })?;
        // Adopting reads manifests, which takes the lock: it is not held meanwhile.
        let name_key = adopt().unwrap_or_else(random_key);
        let mut machine = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = machine.as_ref() {
            return Ok(key.clone());
        }
        let key = MachineKey { identity: x25519::Identity::generate(), name_key };
        write_key_file(path, &key)?;
        tracing::info!(file = %path.display(), "created this machine's key for the encrypted backup repository");
        let key = Arc::new(key);
        *machine = Some(key.clone());
        Ok(key)
    }

    /// The name of the object holding content whose SHA-256 is `sha256`: the keyed hash of
    /// it and of the recipients.
    pub fn object_name(&self, name_key: &[u8; 32], sha256: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(name_key).expect("HMAC takes any key length");
        mac.update(b"eventvault object v1\n");
        mac.update(self.fingerprint.as_bytes());
        mac.update(b"\n");
        mac.update(sha256.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The recipients, as they were configured.
    pub fn recipients(&self) -> Vec<String> {
        self.recipients.iter().map(ToString::to_string).collect()
    }

    /// Encrypts a manifest: to the recipients and to this machine's key.
    pub fn seal_manifest(&self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let machine = self.machine(|| None)?;
        let own = machine.identity.to_public();
        let mut out = Vec::with_capacity(plain.len() + 512);
        let mut writer = self.encryptor(Some(&own))?.wrap_output(&mut out).map_err(crypt_io)?;
        writer.write_all(plain).map_err(crypt_io)?;
        writer.finish().map_err(crypt_io)?;
        Ok(out)
    }

    /// Wraps `output` so that what is written to it is encrypted to the recipients.
    pub fn seal_object<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = self.encryptor(None).map_err(io::Error::other)?;
        encryptor.wrap_output(output)
    }

    fn encryptor(&self, also: Option<&x25519::Recipient>) -> Result<age::Encryptor, Error> {
        let all: Vec<&dyn age::Recipient> =
            self.recipients.iter().chain(also).map(|r| r as &dyn age::Recipient).collect();
        age::Encryptor::with_recipients(all.into_iter())
            .map_err(|e| Error::Config(format!("encrypting to REPO_RECIPIENTS: {e}")))
    }

    /// Decrypts an age file read from the repository (hostile input: the caller bounds
    /// `sealed`) with the identities and this machine's key. `what` names it in errors.
    pub fn open_sealed<'r, R: Read + 'r>(
        &self,
        mut sealed: R,
        what: &str,
    ) -> Result<Box<dyn Read + 'r>, Error> {
        // age parses a header again for each line it reads: a header of megabytes would take
        // hours. Ours are a few hundred bytes; one that does not end within
        // MAX_AGE_HEADER is refused before age sees it.
        let header = read_header(&mut sealed).map_err(|e| read_error(what, e))?;
        let Some(header) = header else {
            return Err(Error::Damaged(format!(
                "{what} is not an age file with a header of at most {MAX_AGE_HEADER} bytes"
            )));
        };
        let input = std::io::BufReader::new(std::io::Cursor::new(header).chain(sealed));
        let decryptor = age::Decryptor::new_buffered(input).map_err(|e| decrypt_error(what, e))?;
        let machine = self.machine.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let identities: Vec<&dyn age::Identity> = self
            .identities
            .iter()
            .chain(machine.as_ref().map(|m| &m.identity))
            .map(|i| i as &dyn age::Identity)
            .collect();
        let reader = decryptor.decrypt(identities.into_iter()).map_err(|e| decrypt_error(what, e))?;
        Ok(Box::new(reader))
    }
}

/// The most an age header may take: the version line, a stanza per recipient (about 100
/// bytes each), a random "grease" stanza, and the MAC line.
pub const MAX_AGE_HEADER: usize = 16 << 10;

/// Reads an age header (up to and including its `--- MAC` line), or `None` when it does not
/// end within [`MAX_AGE_HEADER`] bytes.
fn read_header(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // One byte at a time, so nothing past the header is consumed; 16 KiB at most.
    let mut line_start = 0;
    while header.len() < MAX_AGE_HEADER {
        if input.read(&mut byte)? == 0 {
            return Ok(None);
        }
        header.push(byte[0]);
        if byte[0] == b'\n' {
            if header[line_start..].starts_with(b"--- ") {
                return Ok(Some(header));
            }
            line_start = header.len();
        }
    }
    Ok(None)
}

/// Wraps `output` so that what is written to it is encrypted to `recipients` (those a backup's
/// manifest names: an export stays readable by exactly the keys of its backup).
pub fn seal_to<W: Write>(recipients: &[String], output: W) -> Result<age::stream::StreamWriter<W>, Error> {
    let parsed =
        recipients.iter().map(|k| x25519::Recipient::from_str(k)).collect::<Result<Vec<_>, _>>().map_err(
            |_| Error::Damaged("a backup names a recipient that is not an age X25519 public key".into()),
        )?;
    let all: Vec<&dyn age::Recipient> = parsed.iter().map(|r| r as &dyn age::Recipient).collect();
    let encryptor = age::Encryptor::with_recipients(all.into_iter())
        .map_err(|e| Error::Damaged(format!("a backup's recipients: {e}")))?;
    encryptor.wrap_output(output).map_err(crypt_io)
}

/// Whether `bytes` start as an age file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// An error of reading what an age reader decrypted: a damaged file, or the error of the
/// storage underneath, passed through.
pub fn read_error(what: &str, e: io::Error) -> Error {
    match super::error::from_io(e) {
        Ok(inner) => inner,
        Err(e) => {
            Error::Damaged(format!("{what} does not decrypt: {}", crate::untrusted::bounded(&e.to_string())))
        }
    }
}

fn decrypt_error(what: &str, e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::NoKey(format!(
            "{what} is encrypted to keys this machine does not hold: set REPO_IDENTITY_FILE to an identity of REPO_RECIPIENTS"
        )),
        age::DecryptError::Io(e) => read_error(what, e),
        e => Error::Damaged(format!("{what} is not a readable age file: {}", crate::untrusted::bounded(&e.to_string()))),
    }
}

fn crypt_io(e: io::Error) -> Error {
    Error::Local(format!("encrypting: {e}"))
}

/// Whether a configured value holds an age secret key (pasted where a path or a public key
/// belongs): such a value is never repeated in a message.
pub fn looks_secret(value: &str) -> bool {
    value.to_ascii_uppercase().contains("AGE-SECRET-KEY-")
}

/// A path from the configuration as messages show it: never a secret pasted in its place.
fn shown_path(path: &Path) -> String {
    let shown = path.display().to_string();
    match looks_secret(&shown) {
        true => "(a secret key, not a path)".into(),
        false => crate::untrusted::bounded(&shown),
    }
}

fn random_key() -> [u8; 32] {
    // An X25519 secret is 32 random bytes from the OS; hashing one gives a name key without
    // another source of randomness.
    use sha2::Digest;
    let secret = x25519::Identity::generate().to_string();
    Sha256::digest(secret.expose_secret().as_bytes()).into()
}

fn read_small(path: &Path, what: &str) -> Result<Option<String>, Error> {
    let file = match crate::untrusted::open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Config(format!("{what} {}: {e}", shown_path(path)))),
    };
    let mut raw = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut raw)
        .map_err(|e| Error::Config(format!("{what} {}: {e}", shown_path(path))))?;
    if raw.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(Error::Config(format!(
            "{what} {} is larger than {MAX_KEY_FILE_BYTES} bytes",
            shown_path(path)
        )));
    }
    Ok(Some(raw))
}

/// Reads an identity file as `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines, with `#`
/// comments and blank lines.
fn read_identities(path: &Path) -> Result<Vec<x25519::Identity>, Error> {
    let raw = read_small(path, "REPO_IDENTITY_FILE")?
        .ok_or_else(|| Error::Config(format!("REPO_IDENTITY_FILE {} does not exist", shown_path(path))))?;
    let mut identities = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = x25519::Identity::from_str(line).map_err(|_| {
            Error::Config(format!(
                "REPO_IDENTITY_FILE {}: line {} is not an age X25519 identity (AGE-SECRET-KEY-1…)",
                shown_path(path),
                n + 1
            ))
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(Error::Config(format!("REPO_IDENTITY_FILE {} holds no identity", shown_path(path))));
    }
    Ok(identities)
}

fn read_key_file(path: &Path) -> Result<Option<MachineKey>, Error> {
    let Some(raw) = read_small(path, "the repository key file")? else { return Ok(None) };
    let bad = |why: &str| Error::Config(format!("the repository key file {} {why}", path.display()));
    let file: KeyFile = serde_json::from_str(&raw).map_err(|_| bad("is not a key file"))?;
    if file.format_version != 1 {
        return Err(bad("has a format this eventvault does not read"));
    }
    let identity = x25519::Identity::from_str(&file.identity).map_err(|_| bad("holds no valid identity"))?;
    let name_key = hex::decode(&file.name_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| bad("holds no valid name key"))?;
    Ok(Some(MachineKey { identity, name_key }))
}

fn write_key_file(path: &Path, key: &MachineKey) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = KeyFile {
        format_version: 1,
        identity: key.identity.to_string().expose_secret().to_owned(),
        name_key: hex::encode(key.name_key),
    };
    let body = serde_json::to_vec_pretty(&file).expect("a key file serialises");
    let local = |e: io::Error| Error::Local(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(local)?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::File::options().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        // Never replace a key that exists: objects are named with it.
        std::fs::hard_link(&tmp, path)?;
        std::fs::remove_file(&tmp)?;
        crate::durable::sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_sealed_here_opens_with_the_machine_key_and_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let user = x25519::Identity::generate();
        let identity_file = dir.path().join("id.txt");
        std::fs::write(&identity_file, format!("# a comment\n\n{}\n", user.to_string().expose_secret()))
            .unwrap();
        let writer = Crypt::open(&Settings {
            recipients: vec![user.to_public().to_string()],
            identity_file: None,
            key_file: Some(dir.path().join(KEY_FILE)),
        })
        .unwrap();
        writer.name_key(|| None).unwrap();
        let sealed = writer.seal_manifest(b"{\"a\":1}").unwrap();
        assert!(is_sealed(&sealed));
        let mut plain = String::new();
        writer.open_sealed(&sealed[..], "m").unwrap().read_to_string(&mut plain).unwrap();
        assert_eq!(plain, "{\"a\":1}");

        // A machine with only the user's identity reads it too; one with neither cannot.
        let reader =
            Crypt::open(&Settings { identity_file: Some(identity_file), ..Settings::default() }).unwrap();
        let mut plain = String::new();
        reader.open_sealed(&sealed[..], "m").unwrap().read_to_string(&mut plain).unwrap();
        assert_eq!(plain, "{\"a\":1}");
        let stranger = Crypt::open(&Settings::default()).unwrap();
        assert!(matches!(stranger.open_sealed(&sealed[..], "m"), Err(Error::NoKey(_))));
        assert!(matches!(
            stranger.open_sealed(&b"age-encryption.org/v1\n-> X"[..], "m"),
            Err(Error::Damaged(_))
        ));
    }

    #[test]
    fn the_machine_key_is_kept_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            recipients: vec![x25519::Identity::generate().to_public().to_string()],
            identity_file: None,
            key_file: Some(dir.path().join(KEY_FILE)),
        };
        let first = Crypt::open(&settings).unwrap().name_key(|| Some([7; 32])).unwrap();
        assert_eq!(first, [7; 32]);
        let again = Crypt::open(&settings).unwrap().name_key(|| Some([9; 32])).unwrap();
        assert_eq!(again, [7; 32]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), "{").unwrap();
        assert!(matches!(Crypt::open(&settings), Err(Error::Config(_))));
    }

    #[test]
    fn object_names_depend_on_the_name_key_and_the_recipients() {
        let a = x25519::Identity::generate().to_public().to_string();
        let b = x25519::Identity::generate().to_public().to_string();
        let open = |recipients: Vec<String>| {
            Crypt::open(&Settings { recipients, identity_file: None, key_file: None }).unwrap()
        };
        let sha = "ab".repeat(32);
        let one = open(vec![a.clone()]).object_name(&[1; 32], &sha);
        assert_eq!(one.len(), 64);
        assert_ne!(one, sha);
        assert_eq!(one, open(vec![a.clone()]).object_name(&[1; 32], &sha));
        assert_ne!(one, open(vec![a.clone()]).object_name(&[2; 32], &sha));
        assert_ne!(one, open(vec![a.clone(), b.clone()]).object_name(&[1; 32], &sha));
        assert_eq!(
            open(vec![a.clone(), b.clone()]).object_name(&[1; 32], &sha),
            open(vec![b, a]).object_name(&[1; 32], &sha)
        );
    }

    #[test]
    fn recipients_are_checked() {
        let a = x25519::Identity::generate().to_public().to_string();
        assert_eq!(parse_recipients(&format!(" {a}, {a}\n")).unwrap(), vec![a]);
        assert!(parse_recipients("age1nope").unwrap_err().contains("not an age X25519 public key"));
        assert!(parse_recipients("").unwrap().is_empty());
    }
}
