




10.1.2.3"mkGET
authorizationBearer wtk1.x
x-tenantred
:path/docs/7?v=2"/docs/7?v=2*docs.example.com