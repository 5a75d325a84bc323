package supervisor

import (
	"bufio"
	"os"
	"os/signal"
)

func bytesWriter() *bufio.Writer { return bufio.NewWriterSize(os.Stdout, 1<<20) }

func notify(ch chan os.Signal, sigs ...os.Signal) { signal.Notify(ch, sigs...) }

func ignore(sigs ...os.Signal) { signal.Ignore(sigs...) }
