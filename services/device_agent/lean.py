"""Imported first by the agent's entry module (`main.py`): packages that load optional integrations
whenever they find them installed find them absent in the agent's process. httpx loads its command
line with rich and pygments; securesystemslib (under TUF) loads every cloud KMS signer it finds —
the AWS SDK alone is ≈ 20 MiB, and the one app image carries it for the firmware app's S3 store.
The agent signs nothing (it verifies with keys in its metadata), so on a device these would be
most of its memory. A `None` in `sys.modules` makes `import` raise ImportError, which those
packages handle; a process that already loaded one keeps it."""

from __future__ import annotations

import sys

UNUSED = (
    "aiohttp",
    "rich",
    "pygments",
    # securesystemslib's optional signers: AWS KMS, Azure Key Vault, GCP KMS, Vault, HSMs, sigstore
    "boto3",
    "botocore",
    "azure",
    "google.cloud",
    "hvac",
    "pkcs11",
    "keylet",
    "sigstore",
)

for name in UNUSED:
    sys.modules.setdefault(name, None)  # type: ignore[arg-type]
