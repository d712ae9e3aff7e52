from tbspark.cli import main

main()
