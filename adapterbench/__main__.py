from adapterbench.cli import main

main()
