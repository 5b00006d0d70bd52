"""DermaSynth's services: the HTTP gateway and the job workers (each imports the library, never the other)."""
