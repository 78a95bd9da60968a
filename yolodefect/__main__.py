from yolodefect.cli import app

app(prog_name="yolodefect")
