"""The store contract, run against every bundled backend (LanceDB and PostgreSQL + pgvector)."""

import itertools

import pytest

from ragtune.testing import StoreContract

_n = itertools.count()


@pytest.fixture(scope="session")
def pg_dir(tmp_path_factory):
    # No skip: `make test` installs pgserver (the dev extra includes [pg]); a missing one must fail loudly.
    return tmp_path_factory.mktemp("pgdata")


class TestLanceDB(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path):
        return str(tmp_path / "ix")


class TestPgVector(StoreContract):
    @pytest.fixture
    def store_url(self, pg_dir):
        return f"pg:{pg_dir}?index=t{next(_n)}"
