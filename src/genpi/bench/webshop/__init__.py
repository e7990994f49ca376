"""AgentBench WebShop: only its action reader here (the task itself runs in AgentBench, against
``genpi serve``); a harness would go beside it as ``task.py`` + ``cli.py``."""
