from optflow.entrypoints.cli import main

main(prog_name="optflow")
