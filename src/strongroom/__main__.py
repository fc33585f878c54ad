from strongroom.cli.main import run

run()
