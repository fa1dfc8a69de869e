import ssh2 from 'ssh2';

/**
 * An Ed25519 key pair in OpenSSH's formats that ssh2 and OpenSSH can read back. ssh2 1.17 drops a leading zero byte of
 * the public key (about one draw in 256): ssh2 then cannot parse the private key ("Malformed OpenSSH private key")
 * and OpenSSH refuses it ("error in libcrypto"). Every key hoopctl makes comes from here: the broker's host key,
 * a rotated backend key, a tunnel's own client key.
 */
export function generateParsableKeyPair(comment: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error)) return pair;
  }
  throw new Error('could not generate a usable SSH key');
}
