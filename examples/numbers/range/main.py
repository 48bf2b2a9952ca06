def start(args, api):
    n = args["input"][0]
    return list(range(1, n + 1))
