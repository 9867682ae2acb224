package interop

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestTutorialPythonClients runs the tutorial's own Python clients
// (examples/tutorial/clients) against the tutorial config, unchanged except
// for the URL, and checks what they print.
func TestTutorialPythonClients(t *testing.T) {
	t.Parallel()
	needPython(t)
	s := moontest.StartFile(t, "../../examples/tutorial/moonwire.toml")
	dir := t.TempDir()
	// client copies a tutorial client with its URL pointed at the test
	// server; nothing else changes.
	client := func(name string) string {
		src, err := os.ReadFile(filepath.Join("../../examples/tutorial/clients", name))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, bytes.ReplaceAll(src, []byte("ws://localhost:8765"), []byte("ws://"+s.Addr())), 0o644); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	run := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, python, append([]string{client(name)}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	expect := func(t *testing.T, out string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}

	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		expect(t, run(t, "echo_client.py"), "客户端收到: Echo: Hello WebSocket!", "客户端收到: Echo: 测试消息1", "客户端收到: Echo: 测试消息2")
	})
	t.Run("binary", func(t *testing.T) {
		t.Parallel()
		expect(t, run(t, "binary_client.py"), "文本响应: 文本响应: 这是文本消息", "二进制响应: b'hello_binary_response'")
	})
	t.Run("close", func(t *testing.T) {
		t.Parallel()
		expect(t, run(t, "close_client.py"), "初始连接状态: 开启", "发送关闭指令后状态: 关闭")
	})
	t.Run("exceptions", func(t *testing.T) {
		t.Parallel()
		if out := run(t, "exception_client.py"); strings.TrimSpace(out) != "" {
			t.Fatalf("the server answered, so the client should print nothing:\n%s", out)
		}
	})
	t.Run("heartbeat", func(t *testing.T) {
		t.Parallel()
		expect(t, run(t, "heartbeat_client.py", "--seconds", "1"), "客户端收到: 响应: 业务消息1")
	})
	t.Run("auth", func(t *testing.T) {
		t.Parallel()
		expect(t, run(t, "auth_client.py"), "客户端收到: 认证通过的响应: 认证后的业务消息")
		expect(t, run(t, "auth_client.py", "--invalid"), "连接被拒绝", "HTTP 401")
	})
	t.Run("chat", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		listener := exec.CommandContext(ctx, python, client("chat_client.py"), "用户2", "--seconds", "4")
		listener.Stdout, listener.Stderr = &out, &out
		if err := listener.Start(); err != nil {
			t.Fatal(err)
		}
		moontest.WaitFor(t, "the listener to join", func() bool { return s.Router.RoomSize("chat") >= 1 })
		run(t, "chat_client.py", "用户1", "--say", "大家好")
		_ = listener.Wait()
		expect(t, out.String(), "收到广播: [127.0.0.1:", "大家好")
	})
	t.Run("monitor", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		a := exec.CommandContext(ctx, python, client("monitor_client.py"), "--seconds", "7")
		a.Stdout, a.Stderr = &out, &out
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		moontest.WaitFor(t, "the first monitor client", func() bool { return s.Router.RoomSize("monitor") >= 1 })
		b := run(t, "monitor_client.py", "--seconds", "7")
		_ = a.Wait()
		// Each reports every 5 s and sees the other's reports.
		expect(t, out.String(), "收到监控广播: [127.0.0.1:", "CPU:")
		expect(t, b, "收到监控广播: [127.0.0.1:", "CPU:")
	})
}
