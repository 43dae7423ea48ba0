//! The server's RSA key pair: platforms encrypt their appId with the public key
//! (`getAccessToken`); the private key decrypts it and signs pushes ([`Signer`]).

use base64::Engine as _;
use carbon_engine::store::{ServerKey, Store};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer as _};
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

    /// Every reading of a base64 RSA ciphertext under the accepted paddings: PKCS#1 v1.5 (what a
    /// stock Java `Cipher.getInstance("RSA")` sends) and OAEP with SHA-256 — with MGF1 over
    /// SHA-256, or over SHA-1 as Java's `RSA/ECB/OAEPWithSHA-256AndMGF1Padding` does by
    /// default — as UTF-8 text. Empty for any failure. A ciphertext made with one
    /// padding passes another's check by chance about once in 65,000 tries; the caller keeps
    /// the reading that names a registered platform.
    pub fn candidates(&self, base64_ciphertext: &str) -> Vec<String> {
        let Ok(ciphertext) = base64::engine::general_purpose::STANDARD.decode(base64_ciphertext.trim()) else {
            return Vec::new();
        };
        [
            self.private.decrypt(Pkcs1v15Encrypt, &ciphertext),
            self.private.decrypt(Oaep::new::<sha2::Sha256>(), &ciphertext),
            self.private.decrypt(Oaep::new_with_mgf_hash::<sha2::Sha256, sha1::Sha1>(), &ciphertext),
        ]
        .into_iter()
        .filter_map(|plain| String::from_utf8(plain.ok()?).ok())
        .collect()
    }
}

/// Signs pushes: `X-Carbon-Signature` = base64 RSA-SHA256 (PKCS#1 v1.5) over
/// `timestamp + "." + body`, what Java's `Signature.getInstance("SHA256withRSA")` verifies.
pub struct Signer {
    key: SigningKey<Sha256>,
}

impl Signer {
    /// Parses the PKCS#8 PEM of `key`.
    pub fn new(key: &ServerKey) -> anyhow::Result<Self> {
        Ok(Signer { key: SigningKey::new(RsaPrivateKey::from_pkcs8_pem(&key.private_key_pem)?) })
    }

    /// The base64 signature of `timestamp + "." + body`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(&message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;

    #[test]
    fn signatures_verify_with_the_public_key_only_over_the_signed_text() {
        let key = generate(DEFAULT_KEY_BITS).unwrap();
        let signature = Signer::new(&key).unwrap().sign("1712629830000", br#"{"cid":"c-1","type":1}"#);
        let public = RsaPublicKey::from_public_key_pem(&key.public_key_pem).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(public);
        let bytes = base64::engine::general_purpose::STANDARD.decode(signature).unwrap();
        let signature = Signature::try_from(bytes.as_slice()).unwrap();
        assert!(verifier.verify(br#"1712629830000.{"cid":"c-1","type":1}"#, &signature).is_ok());
        assert!(verifier.verify(br#"1712629830001.{"cid":"c-1","type":1}"#, &signature).is_err());
        assert!(verifier.verify(br#"1712629830000.{"cid":"c-1","type":-1}"#, &signature).is_err());
    }
}
