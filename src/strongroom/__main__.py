from strongroom.cli.launch import run

run()
