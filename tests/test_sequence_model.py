import pytest
import torch

from project.models import RecurrentNet


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_matches_each_sequence_alone(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    net = RecurrentNet(3, 4, cell=cell, hidden_size=8, num_layers=2, bidirectional=bidirectional)
    lengths = torch.tensor([5, 2, 7, 1])
    batch = torch.randn(4, 7, 3)
    for i, n in enumerate(lengths):
        batch[i, n:] = 1e3  # padding must not leak into the result, whatever its value
    together = net(batch, lengths)
    alone = torch.cat([net(batch[i : i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_two_dimensional_input_is_one_feature_per_step() -> None:
    net = RecurrentNet(1, 10)
    x = torch.randn(6, 40)
    torch.testing.assert_close(net(x), net(x.unsqueeze(-1)))
    assert net(x).shape == (6, 10)
