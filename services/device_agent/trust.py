"""The device's TUF client (python-tuf's `ngclient`): what the agent runs before any install.

The trust anchor is the root the device was provisioned with (`bootstrap`), never one it
fetches. Each check runs the whole client workflow against the firmware app's metadata:
newer roots followed one version at a time (each signed by the threshold of the one before and
of its own, so a device that was offline during several rotations catches up), then timestamp →
snapshot → targets, each verified against the root's keys and thresholds, refused when expired
(a freeze attack), older than what this device saw before (rollback: the metadata it trusted is
kept in `metadata_dir`), or not the version the one above names (mix-and-match). Only then is the
desired artifact looked up among the signed targets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

from services.domain.software.release import Refusal, Release, UpdateRefused, release_of


class TrustedReleases:
    def __init__(
        self, metadata_url: str, root: bytes, metadata_dir: Path, fetcher: FetcherInterface | None = None
    ) -> None:
        self.metadata_url = metadata_url.rstrip("/") + "/"
        self.root = root
        self.metadata_dir = metadata_dir
        self.fetcher = fetcher
        self._lock = asyncio.Lock()

    async def release(self, artifact: str) -> Release:
        """The release the current, verified targets metadata lists as `artifact`, or
        `UpdateRefused` saying why not."""
        async with self._lock:
            return await asyncio.to_thread(self._release, artifact)

    def _release(self, artifact: str) -> Release:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        try:
            updater = Updater(str(self.metadata_dir), self.metadata_url, fetcher=self.fetcher, bootstrap=self.root)
            updater.refresh()
            target = updater.get_targetinfo(artifact)
        except exceptions.ExpiredMetadataError as error:
            raise UpdateRefused(Refusal.EXPIRED, str(error)) from None
        except exceptions.UnsignedMetadataError as error:
            raise UpdateRefused(Refusal.SIGNATURE, str(error)) from None
        except exceptions.BadVersionNumberError as error:  # rollback, mix-and-match
            raise UpdateRefused(Refusal.ROLLBACK, str(error)) from None
        except exceptions.LengthOrHashMismatchError as error:
            raise UpdateRefused(Refusal.HASH, str(error)) from None
        except exceptions.DownloadError as error:
            raise UpdateRefused(Refusal.UNAVAILABLE, str(error) or type(error).__name__) from None
        except (exceptions.RepositoryError, ValueError) as error:
            raise UpdateRefused(Refusal.MALFORMED, str(error)) from None
        if target is None:
            raise UpdateRefused(Refusal.UNKNOWN, f"no signed target {artifact}")
        return release_of(target.path, target.length, target.hashes, target.custom)
