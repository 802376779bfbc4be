"""Suite-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the test machine's cores are shared, and OpenMP spinning on a busy
    core slows small convs down a hundredfold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _export_cache(tmp_path_factory):
    """`run --checkpoint` caches its on-the-fly exports: in a temporary folder, never ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DEFOCUS_CACHE", str(tmp_path_factory.mktemp("defocus-cache")))
    yield
    mp.undo()
