"""The CLI's thread default: one torch thread per process unless OMP_NUM_THREADS is set (torch's
own thread per core collapses beside other work: docs/benchmarks.md)."""

import pytest
import torch

from tests.conftest import SEQUENCE, cli


@pytest.mark.parametrize("omp_num_threads, expected", [(None, 1), ("2", 2)])
def test_one_thread_unless_omp_num_threads_says_otherwise(
    omp_num_threads: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = torch.get_num_threads()
    if omp_num_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    torch.set_num_threads(2)  # as torch starts on 2 cores, or as OMP_NUM_THREADS=2 set it
    try:
        with pytest.raises(SystemExit):
            cli("fit", "-c", SEQUENCE / "gru.yaml", "--print_config")
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
