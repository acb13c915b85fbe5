package local

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the task program: with GMESH_TEST_TASK set it
// runs taskMain instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("GMESH_TEST_TASK") {
	case "task":
		taskMain()
		return
	case "sleep":
		<-time.After(10 * time.Minute) // a task that runs until it is signalled
		return
	}
	os.Exit(m.Run())
}

// taskMain is a tiny task: it serves its environment on HOST:PORT at /env.
//
//	CRASH=1        exit 3 at once
//	IGNORE_TERM=1  log SIGTERM and keep running
//	GRANDCHILD=1   start a long-sleeping child process and print its pid
func taskMain() {
	fmt.Printf("task up pid=%d\n", os.Getpid())
	if os.Getenv("CRASH") == "1" {
		fmt.Println("crashing")
		os.Exit(3)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if os.Getenv("GRANDCHILD") == "1" {
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "GMESH_TEST_TASK=sleep")
		if err := c.Start(); err != nil {
			fmt.Println("grandchild:", err)
			os.Exit(4)
		}
		fmt.Printf("grandchild pid=%d\n", c.Process.Pid)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(5)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(os.Environ())
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strconv.Itoa(os.Getpid()))
	})
	go http.Serve(ln, mux)
	for range sigs {
		fmt.Println("got SIGTERM")
		if os.Getenv("IGNORE_TERM") != "1" {
			ln.Close()
			os.Exit(0)
		}
	}
}
