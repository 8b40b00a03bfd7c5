"""transformers' Trainer: its DataLoader workers (the trainer's descendants) land every event."""

from __future__ import annotations

from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.timeout(300), pytest.mark.torch, pytest.mark.slow]

N = 100


class _Tiny(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, x: object, labels: object) -> dict[str, object]:
        out = self.lin(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def test_trainer_dataloader_workers_land_every_event(logdir: Path, tmp_path: Path) -> None:
    import engine_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=10, num_train_epochs=1,
        dataloader_num_workers=2, report_to="none", use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=_Tiny(), args=args,
                                   train_dataset=engine_workers.LoggingDataset(N))
    trainer.train()
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    values = sorted(e.value for e in logs.entries if e.tag == "engine/trainer_item")
    assert values == [float(i) for i in range(N)]
    assert logs.dropped == 0 and logs.transport_errors == 0
