//! The server's RSA key pair: platforms encrypt their appId with the public key
//! (`getAccessToken`); the private key decrypts it (and signs pushes, later).

use base64::Engine as _;
use carbon_engine::store::{ServerKey, Store};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};

/// Key size used unless the operator asks for more.
pub const DEFAULT_KEY_BITS: usize = 2048;

/// Makes a new key pair as PEM.
pub fn generate(bits: usize) -> anyhow::Result<ServerKey> {
    anyhow::ensure!((2048..=8192).contains(&bits), "--bits must be 2048 to 8192, not {bits}");
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), bits)?;
    Ok(ServerKey {
        private_key_pem: private.to_pkcs8_pem(LineEnding::LF)?.to_string(),
        public_key_pem: RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?,
    })
}

/// Creates and stores a new key pair, which becomes current (rotation).
pub async fn rotate(store: &dyn Store, bits: usize) -> anyhow::Result<ServerKey> {
    let key = generate(bits)?;
    store.insert_server_key(&key, carbon_engine::now_ms()).await?;
    Ok(key)
}

/// The current key pair, creating one on first use.
pub async fn current_or_create(store: &dyn Store) -> anyhow::Result<ServerKey> {
    match store.current_server_key().await? {
        Some(key) => Ok(key),
        None => rotate(store, DEFAULT_KEY_BITS).await,
    }
}

/// A loaded private key, ready to decrypt.
pub struct Decryptor {
    private: RsaPrivateKey,
}

impl Decryptor {
    /// Parses the PKCS#8 PEM of `key`.
    pub fn new(key: &ServerKey) -> anyhow::Result<Self> {
        Ok(Decryptor { private: RsaPrivateKey::from_pkcs8_pem(&key.private_key_pem)? })
    }

    /// Decrypts a base64 RSA ciphertext sent with PKCS#1 v1.5 padding (what a stock Java
    /// `Cipher.getInstance("RSA")` sends) or OAEP-SHA256, into UTF-8 text. `None` for any
    /// failure, deliberately without saying which.
    pub fn decrypt_text(&self, base64_ciphertext: &str) -> Option<String> {
        let ciphertext = base64::engine::general_purpose::STANDARD.decode(base64_ciphertext.trim()).ok()?;
        let plain = self
            .private
            .decrypt(Pkcs1v15Encrypt, &ciphertext)
            .or_else(|_| self.private.decrypt(Oaep::new::<sha2::Sha256>(), &ciphertext))
            .ok()?;
        String::from_utf8(plain).ok()
    }
}
