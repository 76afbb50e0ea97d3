from umstieg.cli import app

app()
