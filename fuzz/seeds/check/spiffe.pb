
V
0


10.1.2.3" spiffe://prod.example.org/ns/web"" GET"/docs/1*docs.example.com