"""The offline side of a local suite's release chain, as files in one directory: what root key
holders and release managers keep on their own machines in real life.

    root-1.pem root-2.pem root-3.pem   root keys (threshold 2)
    targets-1.pem                      the release manager's key (threshold 1)
    1.root.json                        the first root, signed by two root keys: what the suite is
                                       given once and what devices are provisioned with

The online snapshot and timestamp keys are the suite's (its secret store); the first root names
their public halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Root, Snapshot, Targets, Timestamp

from services.domain.software import repository as rules

ROOT_KEYS = 3
ROOT_THRESHOLD = 2
ROOT_LIFETIME = timedelta(days=365)


@dataclass
class ReleaseTeam:
    directory: Path

    def key_path(self, role: str, number: int) -> Path:
        return self.directory / f"{role}-{number}.pem"

    def signer(self, role: str, number: int) -> CryptoSigner:
        return rules.pem_signer(self.key_path(role, number).read_bytes())

    @property
    def root_path(self) -> Path:
        return self.directory / "1.root.json"

    def create(self, online: dict[str, Key]) -> None:
        """Make the keys and the first root (once: an existing directory is kept)."""
        if self.root_path.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for role, count in ((Root.type, ROOT_KEYS), (Targets.type, 1)):
            for number in range(1, count + 1):
                path = self.key_path(role, number)
                path.write_bytes(rules.new_private_pem())
                path.chmod(0o600)
        keys: dict[str, list[Key]] = {
            Root.type: [self.signer(Root.type, n).public_key for n in range(1, ROOT_KEYS + 1)],
            Targets.type: [self.signer(Targets.type, 1).public_key],
            Snapshot.type: [online[Snapshot.type]],
            Timestamp.type: [online[Timestamp.type]],
        }
        thresholds = {Root.type: ROOT_THRESHOLD, Targets.type: 1, Snapshot.type: 1, Timestamp.type: 1}
        root = rules.new_root(keys, thresholds, datetime.now(UTC) + ROOT_LIFETIME)
        rules.signed_by(root, [self.signer(Root.type, n) for n in range(1, ROOT_THRESHOLD + 1)])
        self.root_path.write_bytes(root.to_bytes())
