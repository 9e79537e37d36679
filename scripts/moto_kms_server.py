"""moto's AWS server (pinned moto[server]==5.2.5) with KMS `Sign`/`Verify` honouring
`MessageType=DIGEST`.

Stock moto 5.2.5 reads MessageType and then ignores it: a 32-byte digest is SHA-256-hashed
again before signing, so the signature never verifies over the digest (upstream fix:
getmoto/moto PR #10202, not in 5.2.5). This launcher patches exactly that: when the request
says DIGEST, the ECDSA key signs/verifies the message as a prehashed digest (and the message
must be as long as the hash). Everything else is stock moto. Drop it once a moto release
carries the fix.

Usage: python moto_kms_server.py PORT   (binds 127.0.0.1 only)
"""
import sys
import threading

from cryptography.hazmat.primitives.asymmetric import ec, utils
from moto.kms import responses as kms_responses
from moto.kms import utils as kms_utils
from moto.kms.exceptions import ValidationException

_request = threading.local()


def _with_message_type(handler):
    def wrapped(self):
        _request.digest = self._get_param("MessageType") == "DIGEST"
        try:
            return handler(self)
        finally:
            _request.digest = False

    return wrapped


def _algorithm(key, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, key.valid_signing_algorithms)
    return key._ECDSAPrivateKey__hash_algorithm(signing_algorithm)


def _check_digest(message, hash_algorithm):
    if len(message) != hash_algorithm.digest_size:
        raise ValidationException(
            f"Digest is invalid length for algorithm {hash_algorithm.name.upper()}."
        )


_stock_sign = kms_utils.ECDSAPrivateKey.sign
_stock_verify = kms_utils.ECDSAPrivateKey.verify


def sign(self, message, signing_algorithm):
    if not getattr(_request, "digest", False):
        return _stock_sign(self, message, signing_algorithm)
    hash_algorithm = _algorithm(self, signing_algorithm)
    _check_digest(message, hash_algorithm)
    return self.private_key.sign(message, ec.ECDSA(utils.Prehashed(hash_algorithm)))


def verify(self, message, signature, signing_algorithm):
    if not getattr(_request, "digest", False):
        return _stock_verify(self, message, signature, signing_algorithm)
    hash_algorithm = _algorithm(self, signing_algorithm)
    _check_digest(message, hash_algorithm)
    try:
        self.private_key.public_key().verify(
            signature, message, ec.ECDSA(utils.Prehashed(hash_algorithm))
        )
        return True
    except Exception:
        return False


kms_utils.ECDSAPrivateKey.sign = sign
kms_utils.ECDSAPrivateKey.verify = verify
kms_responses.KmsResponse.sign = _with_message_type(kms_responses.KmsResponse.sign)
kms_responses.KmsResponse.verify = _with_message_type(kms_responses.KmsResponse.verify)

if __name__ == "__main__":
    from moto.server import main

    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
