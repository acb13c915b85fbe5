package local

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// allocAddr picks the address for a task's next run. With own loopback IPs
// (Linux) it keeps the task's previous IP when its port is still bindable
// there, else takes the first IPBase.x (x = 2..254) that no other task holds
// and where the port is bindable. Without them (or when none is bindable) it
// falls back to 127.0.0.1 and a port no other task holds. want 0 means any
// free port.
func (s *Supervisor) allocAddr(id, prevIP string, prevPort, want int) (ip string, port int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ownLoopbackIPs {
		try := func(cand string) (int, bool) {
			if owner, ok := s.ips[cand]; ok && owner != id {
				return 0, false
			}
			p, err := probe(cand, want)
			return p, err == nil
		}
		if prevIP != "" && prevIP != fallbackIP {
			if p, ok := try(prevIP); ok {
				s.ips[prevIP] = id
				return prevIP, p, nil
			}
			delete(s.ips, prevIP)
		}
		for x := 2; x <= 254; x++ {
			cand := s.cfg.IPBase + "." + strconv.Itoa(x)
			if p, ok := try(cand); ok {
				s.ips[cand] = id
				return cand, p, nil
			}
		}
		s.log.Warn("no own loopback address is free, falling back to 127.0.0.1", "task", id, "ipBase", s.cfg.IPBase, "port", want)
	}
	// Fallback: one IP, distinct ports.
	if prevIP == fallbackIP && prevPort != 0 && s.ports[prevPort] == id {
		if _, err := probe(fallbackIP, prevPort); err == nil {
			return fallbackIP, prevPort, nil
		}
		delete(s.ports, prevPort)
	}
	for range 20 {
		p, err := probe(fallbackIP, 0)
		if err != nil {
			return "", 0, fmt.Errorf("allocate task address: %w", err)
		}
		if _, taken := s.ports[p]; !taken {
			s.ports[p] = id
			return fallbackIP, p, nil
		}
	}
	return "", 0, errors.New("allocate task address: no free port on 127.0.0.1")
}

const fallbackIP = "127.0.0.1"

// releaseAddr forgets id's address. Called with s.mu held.
func (s *Supervisor) releaseAddr(id, ip string, port int) {
	if s.ips[ip] == id {
		delete(s.ips, ip)
	}
	if ip == fallbackIP && s.ports[port] == id {
		delete(s.ports, port)
	}
}

// probe checks that ip:port is bindable now (port 0: picks a free one) and
// returns the port.
func probe(ip string, port int) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p, nil
}

// freePort returns a currently free port on ip.
func freePort(ip string) (int, error) { return probe(ip, 0) }
