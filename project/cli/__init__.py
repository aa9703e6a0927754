"""The command line: `python -m project {fit,validate,test,predict,tune} -c configs/<exp>.yaml`.

- `app.py`: `ProjectCLI`, the LightningCLI with this project's arguments and defaults
- `run_folder.py`: which run folder a command logs into (the layout: project/runs.py)
- `run_config.py`: the `config.yaml` a fit saves there
- `errors.py`: one-line errors
- `command.py`: `main`, what `python -m project` runs
"""

from project.cli.app import ProjectCLI, make_cli
from project.cli.command import main
from project.cli.errors import user_error_in

__all__ = ["ProjectCLI", "main", "make_cli", "user_error_in"]
