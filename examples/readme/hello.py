import macula

with macula.Mesh(nodes=2) as mesh:                # or macula.Node(listen=..., bootstrap=[...])
    a, b = mesh.nodes
    sub = b.subscribe("sensors.*.temp", lambda m: print(m.topic, m.payload))  # keep it: dropping it unsubscribes
    upper = b.advertise("text.upper", lambda args: args.upper())
    mesh.settle()
    a.publish("sensors.kitchen.temp", b"21.5", qos=1)  # QoS 1: returns once b has it
    print(a.call("text.upper", b"hello"))             # b'HELLO'
